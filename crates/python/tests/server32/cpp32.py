"""Wraps a 32-bit C++ library (extern "C" functions, structs, strings, arrays), msl-loadlib style."""

import ctypes
import math
import os

from bitbridge import Server32


class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_double), ("y", ctypes.c_double)]


class FourPoints(ctypes.Structure):
    _fields_ = [("points", Point * 4)]


class Cpp32(Server32):
    def __init__(self, host, port, **kwargs):
        super().__init__(os.environ["CPP_LIBRARY"], "cdll", host, port)

    def add(self, a, b):
        self.lib.add.restype = ctypes.c_int
        return self.lib.add(ctypes.c_int(a), ctypes.c_int(b))

    def subtract(self, a, b):
        self.lib.subtract.restype = ctypes.c_float
        return self.lib.subtract(ctypes.c_float(a), ctypes.c_float(b))

    def add_or_subtract(self, a, b, do_addition):
        self.lib.add_or_subtract.restype = ctypes.c_double
        return self.lib.add_or_subtract(ctypes.c_double(a), ctypes.c_double(b), ctypes.c_bool(do_addition))

    def scalar_multiply(self, a, xin):
        n = len(xin)
        self.lib.scalar_multiply.restype = None
        xout = (ctypes.c_double * n)()
        self.lib.scalar_multiply(ctypes.c_double(a), (ctypes.c_double * n)(*xin), ctypes.c_int(n), xout)
        return list(xout)

    def reverse_string_v1(self, original):
        n = len(original)
        rev = ctypes.create_string_buffer(n)
        self.lib.reverse_string_v1(ctypes.c_char_p(original.encode()), ctypes.c_int(n), rev)
        return rev.raw.decode()

    def distance_4_points(self, points):
        self.lib.distance_4_points.restype = ctypes.c_double
        fp = FourPoints()
        for i, (x, y) in enumerate(points):
            fp.points[i] = Point(x, y)
        return self.lib.distance_4_points(fp)

    def pointer_size(self):
        return ctypes.sizeof(ctypes.c_void_p), math.pi
