"""The serial port to the Wi-SUN stick: open it exclusively, write commands, read parsed items.

Every line written or read is traced at debug level through a :class:`~.skstack.Redactor`, so
the Route-B password and ID never reach a log (the stick even echoes SKSETPWD back when
echo-back is on). Serial errors become :class:`~.errors.LinkLost` with a sentence saying what
to check; :meth:`Link.wake` interrupts a waiting :meth:`Link.receive` from another thread.
"""

from __future__ import annotations

import errno
import logging
import os
import select
from typing import Any

from kansoku_plugins.smartmeter import skstack
from kansoku_plugins.smartmeter.errors import LinkLost


class Link:
    """One open serial port and the parser of what the stick writes."""

    def __init__(
        self, device: str, baudrate: int, redact: skstack.Redactor, log: logging.Logger
    ) -> None:
        self.device = device
        self.baudrate = baudrate
        self.redact = redact
        self.trace = log.getChild("serial")
        self._port: Any = None  # serial.Serial, imported when the port opens
        self._parser = skstack.StreamParser()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    @property
    def is_open(self) -> bool:
        """Whether the port is open."""
        return self._port is not None

    def open(self) -> None:
        """Open the port for this program alone (pyserial ``exclusive=True``)."""
        import serial

        try:
            self._port = serial.Serial(self.device, self.baudrate, timeout=0, exclusive=True)
        except serial.SerialException as exc:
            raise LinkLost(self._open_problem(exc)) from None
        except (OSError, ValueError) as exc:
            raise LinkLost(f"cannot open {self.device}: {exc}") from None
        self._parser = skstack.StreamParser()
        self.trace.debug("opened %s at %d baud", self.device, self.baudrate)

    def _open_problem(self, exc: Exception) -> str:
        number = getattr(exc, "errno", None)
        text = str(exc)
        if number in (errno.EAGAIN, errno.EWOULDBLOCK) or "exclusively lock" in text:
            return (
                f"{self.device}: the port is in use by another program (a running agent?); "
                "only one program can talk to the stick: read the agent's values with "
                "`agent get` or `agent cacti` instead of opening the stick again"
            )
        if number == errno.ENOENT or "No such file" in text:
            return (
                f"{self.device} does not exist: is the Wi-SUN stick plugged in? "
                "(ls -l /dev/serial/by-id/ shows the stable names)"
            )
        if number == errno.EACCES or "Permission denied" in text:
            return (
                f"no permission to open {self.device}: add the agent's user to the group "
                "that owns it (usually dialout) and restart the agent"
            )
        if number == errno.EBUSY:
            return f"{self.device} is busy: another program holds it open"
        return f"cannot open {self.device}: {text}"

    def close(self) -> None:
        """Close the port (safe to call twice)."""
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception as exc:  # pyserial may fail on a vanished device
                self.trace.debug("closing %s: %s", self.device, exc)

    def dispose(self) -> None:
        """Close the port and the wake pipe."""
        self.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def send(self, text: str, data: bytes = b"") -> None:
        """Write a command line (``data`` follows SKSENDTO's header directly, without CR LF)."""
        if self._port is None:
            raise LinkLost(f"{self.device} is not open")
        if data:
            self.trace.debug("> %s<%d bytes %s>", self.redact(text), len(data), data.hex().upper())
            payload = text.encode("ascii") + data
        else:
            self.trace.debug("> %s", self.redact(text))
            payload = (text + "\r\n").encode("ascii")
        try:
            self._port.write(payload)
            self._port.flush()
        except Exception as exc:
            raise self._lost(exc) from None

    def receive(self, timeout: float) -> list[skstack.Item]:
        """Items the stick wrote, waiting up to ``timeout`` for the first bytes."""
        if self._port is None:
            raise LinkLost(f"{self.device} is not open")
        try:
            ready, _, _ = select.select(
                [self._port.fileno(), self._wake_r], [], [], max(0.0, timeout)
            )
            if self._wake_r in ready:
                self._drain_wake()
            if self._port.fileno() not in ready:
                return []
            data = self._port.read(65536)
        except Exception as exc:
            raise self._lost(exc) from None
        items = self._parser.feed(data)
        for item in items:
            self.trace.debug("< %s", self.redact(skstack.describe(item)))
        return items

    def _lost(self, exc: Exception) -> LinkLost:
        self.close()
        return LinkLost(
            f"lost the connection to {self.device} ({exc}); was the stick unplugged? "
            "reopening it with backoff"
        )

    def wake(self) -> None:
        """Make a waiting :meth:`receive` return now (from any thread)."""
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass
