"""Generate the Python stubs in libs/contracts from protos/, or check they are current.

python tools/gen_protos.py                      # regenerate everything
python tools/gen_protos.py --only toex/comms    # regenerate one package's files only
python tools/gen_protos.py --check              # exit 1 when the committed stubs are stale
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "libs" / "contracts" / "src"
PACKAGE = "toex"


def _plugin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    found = shutil.which(name) or (str(candidate) if candidate.exists() else None)
    if not found:
        sys.exit(f"{name} not found: run `make install` to get the dev tools")
    return found


def generate(out: Path) -> None:
    from grpc_tools import protoc  # type: ignore[import-untyped]

    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    # Regular packages (not namespace packages) so mypy and wheels see every level.
    for directory in [out / PACKAGE, *(p for p in (out / PACKAGE).rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    (out / PACKAGE / "py.typed").touch()


def _tree(path: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(path)): p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument(
        "--only",
        metavar="DIR",
        help="replace only the generated files under this proto directory (e.g. toex/comms), "
        "leaving the rest of libs/contracts alone",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        if args.check:
            have, want = _tree(OUT / PACKAGE), _tree(fresh / PACKAGE)
            stale = sorted(
                name
                for name in set(have) | set(want)
                if name not in have
                or name not in want
                or not filecmp.cmp(have[name], want[name], shallow=False)
            )
            if stale:
                print(
                    "libs/contracts is stale against protos/; run `make protos` and commit:", file=sys.stderr
                )
                for name in stale:
                    print(f"  {name}", file=sys.stderr)
                return 1
            print(f"contracts current ({len(want)} files)")
            return 0
        if args.only:
            subdir = Path(args.only).relative_to(PACKAGE)
            shutil.rmtree(OUT / PACKAGE / subdir, ignore_errors=True)
            shutil.copytree(fresh / PACKAGE / subdir, OUT / PACKAGE / subdir)
            for init in (OUT / PACKAGE / subdir).parents:
                if init == OUT:
                    break
                (init / "__init__.py").touch()
            print(f"generated {args.only} into {OUT.relative_to(ROOT)}")
            return 0
        shutil.rmtree(OUT / PACKAGE, ignore_errors=True)
        shutil.copytree(fresh / PACKAGE, OUT / PACKAGE)
        print(f"generated {len(_tree(OUT / PACKAGE))} files into {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
