"""Emulated boards: the firmware runs in qemu-system-arm, its UART is a TCP server on 127.0.0.1, its flash (where
the trained state persists) a file on the host that the firmware reaches through semihosting."""
from mcu_train.boards.runner import SocketProcessRunner
from mcu_train.boards.toolchain import require


def qemu_command(board, elf, port, icount=True, extra_args=(), flash_file=None):
    # The semihosting command line names the flash file (boards/common/storage_semihost.c); commas are
    # doubled to survive QEMU's option syntax.
    semihosting = "enable=on,target=native"
    if flash_file:
        semihosting += ",arg=mt-flash=" + str(flash_file).replace(",", ",,")
    cmd = [require("qemu-system-arm", f"to run {board.name}"), "-M", board.qemu_machine, "-kernel", str(elf),
           "-display", "none", "-monitor", "none", "-semihosting-config", semihosting,
           "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on"]
    if icount:
        # One instruction = 1 ns of virtual time: SysTick becomes an exact instruction counter.
        cmd += ["-icount", "shift=0"]
    return cmd + list(extra_args)


class QemuRunner(SocketProcessRunner):
    how = "QEMU"
    counter_unit = "instructions"

    def command(self, elf, port, icount=True, extra_args=()):
        return qemu_command(self.board, elf, port, icount, extra_args, self.flash_file)
