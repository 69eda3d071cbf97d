"""Small MovieLens copies in every format, a fake GroupLens site and a fake PyPI, for the data
tests (tests/data and tests/bad_input). Everything is written by the tests; nothing touches the
network."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import zipfile
from pathlib import Path

from recsys_jax.data import cache_manifest, download, movielens, movielens_synthetic
from recsys_jax.data.movielens import ML100K_GENRES

# --- small data sets in each format ---------------------------------------------------------

ML100K_ITEMS = [  # id, title as u.item prints it, release date, genres
    (1, "Toy Story (1995)", "01-Jan-1995", ("Animation", "Children's", "Comedy")),
    (2, "GoldenEye (1995)", "01-Jan-1995", ("Action", "Adventure", "Thriller")),
    (267, "unknown", "", ("unknown",)),
    (543, "Misérables, Les (1995)", "01-Jan-1995", ("Drama", "Musical")),
    (1412, "Land Before Time III: The Time of the Great Giving (1995) (V)", "01-Jan-1995",
     ("Animation", "Children's")),
]
ML100K_USERS = [(1, 24, "M", "technician", "85711"), (2, 53, "F", "other", "94043"),
                (3, 23, "M", "writer", "T8H1N")]
ML100K_RATINGS = [(1, 1, 5, 874965758), (1, 2, 3, 876893171), (2, 267, 4, 888550871),
                  (3, 543, 1, 889751712), (2, 1412, 2, 888551000), (3, 1, 4, 889751800)]


def write_ml100k(directory: Path, ratings=ML100K_RATINGS) -> Path:
    """GroupLens's u.data / u.item / u.genre / u.user layout."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
    lines = []
    for item_id, title, date, genres in ML100K_ITEMS:
        flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
        url = "" if title == "unknown" else "http://us.imdb.com/M/title-exact?x"
        lines.append(f"{item_id}|{title}|{date}||{url}|{flags}\n")
    (directory / "u.item").write_bytes("".join(lines).encode("latin-1"))
    (directory / "u.genre").write_text(
        "".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)) + "\n")
    (directory / "u.user").write_text("".join("|".join(map(str, u)) + "\n" for u in ML100K_USERS))
    return directory


def write_recbole_ml100k(directory: Path, ratings=ML100K_RATINGS) -> Path:
    """The same data as RecBole's atomic files (title and year split, as in recbole 1.2.1)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
    lines = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"]
    for item_id, title, _, genres in ML100K_ITEMS:
        if title == "unknown":
            name, year = "unkonwn", "unkonwn"
        else:
            name, year = re.fullmatch(r"(.*) \(([^()]*)\)", title).groups()
        lines.append(f"{item_id}\t{name}\t{year}\t{' '.join(genres)}\n")
    (directory / "ml-100k.item").write_text("".join(lines), encoding="utf-8")
    (directory / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        + "".join("\t".join(map(str, u)) + "\n" for u in ML100K_USERS))
    return directory


def write_ml1m(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratings.dat").write_text(
        "1::1::5::978300760\n1::2::3::978302109\n2::3::4::978301968\n3::2::1::978824291\n")
    (directory / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "2::Misérables, Les (1995)::Drama|Musical\n"
        "3::City of Lost Children, The (1995)::Adventure|Sci-Fi\n".encode("latin-1"))
    (directory / "users.dat").write_text(
        "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    return directory


def write_csv_set(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,11,0.5,964981247\n"
        "2,20,4.5,964982224\n2,30,5.0,964983815\n3,40,3.5,964982931\n")
    (directory / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n'
        '20,"Shawshank ""Redemption"", The (1994)",Drama\n'
        "30,Babylon 5,(no genres listed)\n"
        "40,Avatar (2009),Action|IMAX|Sci-Fi\n", encoding="utf-8")
    return directory


def write_generated_csv_set(directory: Path, num_ratings: int = 3_000, seed: int = 0):
    """A generated copy in the ML-20M format: ids beyond 32 bits, half stars, runs of equal
    timestamps, titles with commas and quotes. Returns the Dataset it holds."""
    dataset = movielens_synthetic.generate_movielens_csv_dataset(
        num_ratings // 20, num_ratings // 10, num_ratings, seed=seed,
        first_user_id=3_000_000_000, max_movie_id=2 ** 40)
    movielens_synthetic.write_movielens_csv(dataset, directory)
    return dataset


def zip_directory(directory: Path, archive: Path, prefix: str) -> bytes:
    """Zips ``directory`` under the top-level folder ``prefix`` (as GroupLens zips are laid out)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        for path in sorted(directory.iterdir()):
            out.write(path, f"{prefix}/{path.name}")
    archive.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def forbid_network(monkeypatch) -> None:
    """Any attempt to reach GroupLens or pip fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("unexpected download")

    monkeypatch.setattr(download, "open_url", refuse)
    monkeypatch.setattr(download, "run_pip_download", refuse)


def serve_grouplens(monkeypatch, tmp_path: Path) -> Path:
    """A fake GroupLens site (a folder served by file:// URLs); returns that folder.

    No MD5 is pinned, so the published ``<name>.zip.md5`` is used (tests of the pins set
    ``movielens.GROUPLENS_MD5`` themselves)."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(movielens, "GROUPLENS_URL", site.as_uri())
    monkeypatch.setattr(movielens, "GROUPLENS_MD5", {})
    return site


def publish_zip(site: Path, name: str, data: bytes, md5: str | None = None) -> str:
    """Serves ``<name>.zip`` and, unless md5 is "", its ``.md5`` file; returns the MD5."""
    (site / f"{name}.zip").write_bytes(data)
    digest = hashlib.md5(data).hexdigest()
    if md5 != "":
        (site / f"{name}.zip.md5").write_text(f"MD5 ({name}.zip) = {md5 or digest}\n")
    return digest


def build_fake_wheel(tmp_path: Path) -> Path:
    atomic = write_recbole_ml100k(tmp_path / "atomic")
    wheel = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("recbole/__init__.py", "")
        for path in sorted(atomic.iterdir()):
            archive.write(path, f"{movielens.RECBOLE_ML100K_DIR}/{path.name}")
        archive.writestr(f"{movielens.RECBOLE_ML100K_DIR}/ml-100k.kg", "head_id:token\n")
        archive.writestr("recbole-1.2.1.dist-info/RECORD", "")
    return wheel


def serve_fake_wheel(monkeypatch, tmp_path: Path) -> list[str]:
    """pip hands over a fake recbole wheel (its SHA-256 pinned). Returns the pip calls."""
    wheel = build_fake_wheel(tmp_path)
    monkeypatch.setattr(movielens, "RECBOLE_WHEEL_SHA256",
                        hashlib.sha256(wheel.read_bytes()).hexdigest())
    calls = []

    def fake_pip(requirement, dest):
        calls.append(requirement)
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(download, "run_pip_download", fake_pip)
    return calls


def ignore_known_sizes(monkeypatch) -> None:
    """The copies here are tiny: no check against the published rating counts."""
    monkeypatch.setattr(movielens, "KNOWN_RATINGS", {})


def cache_copy(directory: Path, write=None, origin: str = "https://example.invalid/x.zip",
               **kwargs) -> Path:
    """Writes a copy with ``write`` (if given) and records it in a cache manifest, as a
    download would."""
    if write is not None:
        write(directory, **kwargs)
    cache_manifest.write_manifest(directory, origin, "md5:" + "0" * 32)
    return directory
