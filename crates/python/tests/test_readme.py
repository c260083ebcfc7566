"""The README's Python examples, run as written (the fixtures' paths put in for ./libctest32.so and
./windll32.dll): each `print(...)  # expected` line must print what its comment says."""

from __future__ import annotations

import contextlib
import io
import os
import re

from conftest import ROOT, build, build_windll


def python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python\n") : text.index("## Tour\n")]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_python_examples_print_what_they_say() -> None:
    blocks = python_blocks()
    assert len(blocks) == 3
    for block in blocks:
        code = (
            block.replace("./libctest32.so", build("ctest", 32))
            .replace("./windll32.dll", build_windll("windll", 32))
            .replace('"points"', f'"readme-{os.getpid()}"')
        )
        expected = [m.group(1) for m in re.finditer(r"^\s*print\(.*\)\s+# (.*)$", code, re.M)]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})
        assert out.getvalue().splitlines() == expected
