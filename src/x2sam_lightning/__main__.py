"""``python -m x2sam_lightning {fit,validate,test,predict} +experiment=NAME [overrides]``."""

from x2sam_lightning.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
