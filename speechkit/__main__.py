"""``python -m speechkit ...``: the same command line as the ``speechkit`` script."""
from speechkit.cli import run

if __name__ == "__main__":
    run()
