"""Built-in dataset formats and ``fsbench data convert``.

Formats register through `fsbench_register_formats`; `convert` reads any registered format
(whichever `sniff` claims the source) into an ImageFolder, and writes ImageFolders to any
format that implements `write`.
"""

from __future__ import annotations

from pathlib import Path

import click

import fsbench
from fsbench.plugins.formats.rec import RecFormat

__all__ = ["RecFormat", "convert_cmd"]


def _source_format(src: Path):
    from fsbench.registry import get_registry

    reg = get_registry()
    for name in reg.names("format"):
        cls = reg.get("format", name)
        if cls.sniff(src):
            return cls()
    return None


@click.command("convert")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--to", "target", default=None,
              help="Output format: 'folder' (ImageFolder) or a format name such as 'rec'. "
                   "Default: 'rec' when DST ends in .rec or SRC is a folder, else 'folder'.")
@click.option("--resume", is_flag=True, help="Continue an interrupted conversion into a folder.")
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout, nothing else.")
def convert_cmd(src: Path, dst: Path, target: str | None, resume: bool, overwrite: bool, as_json: bool) -> None:
    """Convert a dataset between an ImageFolder and another format (insightface .rec, ...).

    \b
    Examples:
      fsbench data convert faces_webface_112x112 casia          # train.rec/.idx -> ImageFolder
      fsbench data convert casia casia-rec --to rec             # ImageFolder -> train.rec/.idx
      fsbench data convert world world.rec                      # -> world.rec + world.idx
    """
    from fsbench import ui
    from fsbench.data import DatasetWriter, FaceDataset
    from fsbench.errors import DatasetError, UsageError
    from fsbench.registry import get_registry

    if not src.exists():
        raise DatasetError(src, "no such dataset (expected an ImageFolder or a registered format such as .rec)")
    fmt = _source_format(src)
    if target is None:
        target = "rec" if (dst.suffix.lower() == ".rec" or fmt is None) else "folder"
    if target == "folder":
        if fmt is None:
            raise UsageError(f"{src}: already an ImageFolder (or no registered format recognises it); "
                             "pass --to rec to write it as records")
        total = fmt.count(src) if hasattr(fmt, "count") else None
        writer = DatasetWriter(dst, resume=resume, overwrite=overwrite,
                               info={"source": str(src), "source_format": fmt.name})
        with writer:
            for identity, name, data in ui.track(fmt.iter_items(src), f"converting {src.name}", total=total, unit="images"):
                if not writer.has(identity, name):
                    writer.add(identity, name, data)
        ds = writer.result
        result = {"source": str(src), "source_format": fmt.name, "dest": str(dst), "dest_format": "folder",
                  "images": len(ds), "identities": len(ds.identities)}
    else:
        out_cls = get_registry().get("format", target)
        if fmt is not None:
            raise UsageError(f"{src}: is a {fmt.name!r} dataset; convert it to a folder first (--to folder)")
        from fsbench.data.lock import folder_lock

        writer_fmt = out_cls()
        with folder_lock(dst):  # one writer per record set
            _check_outputs(writer_fmt.outputs(dst), dst, overwrite)
            ds = FaceDataset.open(src)
            writer_fmt.write(ds, dst)
        result = {"source": str(src), "source_format": "folder", "dest": str(dst), "dest_format": target,
                  "images": len(ds), "identities": len(ds.identities)}
    table = ui.table("converted", list(result), [list(result.values())])
    ui.emit(result, as_json=as_json, table=table)


def _check_outputs(outputs: list[Path], dst: Path, overwrite: bool) -> None:
    """Writers never replace files they did not create: without --overwrite nothing that
    exists is replaced, and --overwrite replaces only a set whose main file exists."""
    from fsbench.errors import UsageError

    existing = [p for p in outputs if p.exists()]
    folder_busy = dst.is_dir() and dst.suffix.lower() != ".rec" and any(dst.iterdir())
    if (existing or folder_busy) and not overwrite:
        what = existing[0] if existing else dst
        raise UsageError(f"{what}: exists; pass --overwrite to replace {dst}")
    if (existing or folder_busy) and not outputs[0].exists():
        what = existing[0] if existing else dst
        raise UsageError(f"{what}: exists but {outputs[0]} does not: not a set fsbench wrote, fsbench will not "
                         "replace it; choose another destination")


@fsbench.hookimpl
def fsbench_register_formats():
    return [RecFormat]


@fsbench.hookimpl
def fsbench_register_commands(commands):
    commands.add(convert_cmd, under="data")
