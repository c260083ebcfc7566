"""An echo server: whatever is sent comes back, to prove every data type survives both ways."""

import os
import sys

from bitbridge import Server32


class Echo32(Server32):
    def __init__(self, host, port, **kwargs):
        # Any library will do: the echo server only needs a 32-bit process.
        super().__init__(os.environ["ECHO_LIBRARY"], "cdll", host, port)
        self.kwargs = kwargs
        self.counter = 0

    @property
    def bits(self):
        return sys.maxsize.bit_length() + 1

    def received(self, *args, **kwargs):
        return args, kwargs

    def add(self, a, b):
        self.counter += 1
        return a + b

    def shout(self, text):
        print(text.upper())
        sys.stdout.flush()
        print("to stderr", file=sys.stderr)
        return len(text)

    def fail(self, message):
        raise ValueError(message)

    def crash(self):
        import ctypes

        return ctypes.string_at(0)

    def sleep(self, seconds):
        import time

        time.sleep(seconds)
        return seconds

    def unsendable(self):
        return object()

    def shutdown_handler(self):
        print(f"shutdown after {self.counter} additions")
