"""Command-line helpers shared by the data and tool scripts."""
import argparse

__all__ = ["at_least"]


def at_least(minimum, what=None):
    """argparse type: an integer >= ``minimum``; ``what`` (e.g. "the number of images to draw")
    is named in the error (0 images or rooms would write an unusable dataset or draw nothing)."""
    note = f" ({what})" if what else ""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}{note}, got {value}")
        return value

    return parse
