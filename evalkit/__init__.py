"""evalkit: decide whether a fine-tuned candidate ships.

Stages (one folder each): data -> train -> models (generate) -> scoring -> store -> gates -> report,
and review for blinded human spot-checks. See DESIGN in the README.
"""

__version__ = "0.1.0"
