"""The host board: the same firmware built for Linux, its serial line a TCP server on 127.0.0.1 (fast tests), its
flash (where the trained state persists) a file."""
from mcu_train.boards.runner import SocketProcessRunner


class HostProcessRunner(SocketProcessRunner):
    how = "a Linux process"
    counter_unit = "ns"

    def command(self, elf, port, extra_args=()):
        return [str(elf)]  # extra_args are the emulator's: a process has none

    def environment(self, port):
        return dict(super().environment(port), MT_SERIAL_PORT=str(port), MT_FLASH_FILE=str(self.flash_file))
