"""Wraps a 32-bit Fortran library (gfortran -m32, bind(c) functions), msl-loadlib style."""

import ctypes
import os

from bitbridge import Server32


class Fortran32(Server32):
    def __init__(self, host, port, **kwargs):
        super().__init__(os.environ["FORTRAN_LIBRARY"], "cdll", host, port)

    def sum_8bit(self, a, b):
        self.lib.sum_8bit.restype = ctypes.c_int8
        return self.lib.sum_8bit(ctypes.c_int8(a), ctypes.c_int8(b))

    def factorial(self, n):
        self.lib.factorial.restype = ctypes.c_double
        return self.lib.factorial(ctypes.c_int8(n))

    def standard_deviation(self, data):
        n = len(data)
        self.lib.standard_deviation.restype = ctypes.c_double
        return self.lib.standard_deviation((ctypes.c_double * n)(*data), ctypes.c_int(n))

    def besselj0(self, x):
        self.lib.besselj0.restype = ctypes.c_double
        return self.lib.besselj0(ctypes.c_double(x))
