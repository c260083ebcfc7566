"""Wraps a LabVIEW-style function whose three results come back through pointers."""

import ctypes
import os

from bitbridge import Server32


class Labview32(Server32):
    def __init__(self, host, port, **kwargs):
        super().__init__(os.environ["LABVIEW_LIBRARY"], "cdll", host, port)

    def stdev(self, x, weighting=0):
        mean, variance, std = ctypes.c_double(), ctypes.c_double(), ctypes.c_double()
        data = (ctypes.c_double * len(x))(*x)
        self.lib.stdev(data, len(x), weighting, ctypes.byref(mean), ctypes.byref(variance), ctypes.byref(std))
        return mean.value, variance.value, std.value
