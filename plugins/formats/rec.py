"""The ``rec`` dataset format: insightface ``.rec``/``.idx`` training records.

A path is ``rec`` when it is a ``.rec`` file (with its ``.idx`` beside it) or a folder
holding ``train.rec`` and ``train.idx``, as insightface distributes CASIA-WebFace, MS1M and
Glint360K. Images keep their original encoding both ways (no re-compression).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from fsbench.api import DatasetFormat
from fsbench.errors import DatasetError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from fsbench.data.dataset import FaceDataset
    from fsbench.data.recordio import RecordReader


def rec_file(path: Path) -> Path:
    """The .rec file a path names: itself, or train.rec inside a folder."""
    path = Path(path)
    return path / "train.rec" if path.is_dir() else path


class RecFormat(DatasetFormat):
    name = "rec"
    description = "insightface/MXNet RecordIO training records (train.rec + train.idx)"

    @classmethod
    def sniff(cls, path: Path) -> bool:
        path = Path(path)
        if path.is_dir():
            return (path / "train.rec").is_file() and (path / "train.idx").is_file()
        return path.suffix.lower() == ".rec" and path.is_file()

    def reader(self, path: Path) -> RecordReader:
        from fsbench.data.recordio import RecordReader

        return RecordReader(rec_file(path))

    def count(self, path: Path) -> int:
        """Number of images, from the index alone (for progress bars)."""
        return len(self.reader(path))

    def iter_items(self, path: Path) -> Iterator[tuple[str, str, bytes]]:
        reader = self.reader(path)
        if reader.renamed:  # never collapse images that list.txt gives one name
            from fsbench import ui

            ui.warn(f"{reader.rec.with_name('list.txt')}: {reader.renamed} of {len(reader.names or ())} lines repeat "
                    "an earlier identity/name; those images keep their own file as <name>_k<key>")
        try:
            yield from reader.items()
        finally:
            reader.close()

    def outputs(self, path: Path) -> list[Path]:
        """The record set `write` makes: NAME.rec, NAME.idx, NAME.list.txt, NAME.property, or in
        a folder insightface's train.rec, train.idx, list.txt, property (`side_files`)."""
        from fsbench.data.recordio import side_files

        path = Path(path)
        return list(side_files(path if path.suffix.lower() == ".rec" else path / "train.rec").values())

    def write(self, dataset: FaceDataset, path: Path) -> None:
        """`path` ending in .rec: that file (+ .idx); otherwise a folder with train.rec/train.idx."""
        from fsbench import ui
        from fsbench.data.recordio import write_face_rec

        path = Path(path)
        rec = path if path.suffix.lower() == ".rec" else path / "train.rec"
        if path.suffix.lower() != ".rec" and path.exists() and not path.is_dir():
            raise UsageError(f"{path}: exists and is not a folder")

        def items():
            for i, item in enumerate(ui.track(dataset.items, f"writing {rec.name}", unit="images")):
                try:
                    data = dataset.abspath(i).read_bytes()
                except OSError as exc:
                    raise DatasetError(dataset.abspath(i), f"unreadable ({exc.strerror})") from None
                yield item.label, Path(item.path).name, data

        write_face_rec(rec, items(), list(dataset.identities), dataset.image_size)
