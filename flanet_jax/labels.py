"""The label value that marks pixels to ignore: void classes, image padding, dropped labels.

Losses and metrics skip these pixels; data readers and transforms write it. 255, as in the
Cityscapes, ADE20K and VOC tools, so label PNGs (uint8) can hold it.
"""

IGNORE_INDEX = 255
