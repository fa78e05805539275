"""`ase-symcalc quadratures`: the rule table."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("quadratures", help="print the table of quadrature rules")


def run_quadratures(args) -> int:
    from ..quadrature import quadrature_table

    print(f"{'spec':22s} {'evaluations':>11s} {'with inversion':>15s} {'exact degree':>13s}")
    for row in quadrature_table():
        print(
            f"{row['spec']:22s} {row['evaluations']:11d} "
            f"{row['evaluations_with_inversion']:15d} {row['degree']:13d}"
        )
    print(f"{'random:M':22s} {'M':>11s} {'2M':>15s} {'none':>13s}")
    print(f"{'identity':22s} {1:11d} {1:15d} {'-':>13s}")
    return 0


HANDLERS = {"quadratures": run_quadratures}
