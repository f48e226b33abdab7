"""tests/examples: the toy examples of the condensation loss (examples/*.py). The readout and AP
tests need torch and numpy only; the runs of the examples need matplotlib (and the image one
OpenCV and pycocotools, for the 2D generator) and skip without them."""
