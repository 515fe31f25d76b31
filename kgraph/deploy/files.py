"""Writing files the user asked for: atomically (complete or not at all), mode 0644, and never
over an existing file unless told to."""
import os
import shutil
import tempfile

FILE_MODE = 0o644  # tempfile.mkstemp creates 0600: readable only by its owner, wrong for a model


class OutputExists(FileExistsError):
    """The output path exists and overwriting was not asked for."""

    def __init__(self, path):
        super().__init__(f"{path} already exists (use --force to overwrite it)")
        self.path = path


def check_writable(path, force=False):
    """Raise before any work is done if ``path`` cannot be written: it exists (without
    ``force``), its folder is missing, or the folder is not writable."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, expected a file path")
    if os.path.exists(path) and not force:
        raise OutputExists(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path}: folder {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: folder {directory} is not writable")


def write_atomic(path, data, force=True, mode=FILE_MODE):
    """Write ``data`` (str or bytes) to ``path`` through a temporary file in the same folder and
    one ``os.replace``; an existing file survives any failure.  ``force=False`` refuses to
    replace an existing file."""
    def fill(tmp):
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)
    return _replace(path, fill, force)


def copy_atomic(source, path, force=True):
    """Copy the file ``source`` to ``path`` as ``write_atomic`` writes, mode 0644."""
    return _replace(path, lambda tmp: shutil.copyfile(source, tmp), force)


def _replace(path, fill, force):
    path = os.fspath(path)
    check_writable(path, force=force)
    tmp = temporary_path(path, ".tmp")
    try:
        fill(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def temporary_path(path, suffix):
    """A fresh temporary file beside ``path`` (for writers that need a filename, like onnx)."""
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    fd, tmp = tempfile.mkstemp(prefix=".kgraph-", suffix=suffix, dir=directory)
    os.close(fd)
    os.chmod(tmp, FILE_MODE)
    return tmp
