"""The programs a command needs, found on PATH; when one is missing, the error names the Debian packages that
provide it (a source checkout's `make setup` installs them all)."""
import functools
import shutil
import subprocess

from mcu_train.errors import ToolMissing

DEBIAN_PACKAGES = {
    "arm-none-eabi-gcc": ["gcc-arm-none-eabi", "binutils-arm-none-eabi", "libnewlib-arm-none-eabi"],
    "qemu-system-arm": ["qemu-system-arm"],
    "gcc": ["gcc"],
    "clang": ["clang"],
}


def _missing(program, why, packages):
    return ToolMissing(f"{program} is needed {why} but is not installed: install Debian's "
                       f"{', '.join(packages)} (sudo apt-get install --no-install-recommends {' '.join(packages)}); "
                       "in a source checkout `make setup` does it")


@functools.cache
def require(program, why="") -> str:
    """The full path of `program`, or ToolMissing naming the packages to install."""
    packages = DEBIAN_PACKAGES.get(program, [program])
    path = shutil.which(program)
    if path is None:
        raise _missing(program, why, packages)
    if program == "arm-none-eabi-gcc":
        # The compiler without newlib links nothing: its nano.specs comes with libnewlib-arm-none-eabi.
        specs = subprocess.run([path, "-print-file-name=nano.specs"], capture_output=True, text=True).stdout.strip()
        if specs in ("", "nano.specs"):
            raise _missing("newlib for arm-none-eabi", why, ["libnewlib-arm-none-eabi"])
    return path
