"""A `deblur` or `torchrun` process whose output the test watches line by line (not a test)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable


class Watched:
    """Popen with its merged output read by a thread; ``on_line(line)`` sees each line."""

    def __init__(self, cmd: list[str], on_line: Callable[[str], None] | None = None, **popen):
        self.lines: list[str] = []
        self.on_line = on_line
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if self.on_line is not None:
                self.on_line(line)

    def wait(self, timeout: float = 600) -> int:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(10)
        return self.proc.returncode

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None or any(text in line for line in self.lines), self.tail
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{self.tail}"
            time.sleep(0.05)

    @property
    def out(self) -> str:
        """All of it (search this); failure messages show its end: ``tail``."""
        return "".join(self.lines)

    @property
    def tail(self) -> str:
        return self.out[-4000:]

    def errors(self) -> list[str]:
        return [line.strip() for line in self.lines if line.startswith("error: ")]
