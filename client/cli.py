"""``atelier``: log in, push models to an Atelier site, pull them back.

    atelier login [--site URL] [--username U] [--password-stdin | --token T]
    atelier whoami
    atelier push PATH --name NAME --kind lora [--version v1] [--trigger WORD ...] [--publish]
    atelier pull MODEL[@VERSION] [--out DIR]
    atelier node init | add-dataset | register | publish | start | status   (client/node.py)

Uploads stream in chunks and resume: the upload id is remembered per file (path, size,
modification time), and a rerun asks the server how many bytes it has and sends the rest.
Downloads resume a partial ``.part`` file with a Range request and are checked against the
SHA-256 the server announces before they take the file's name.

Errors are one line on stderr and a non-zero exit status (2 for bad arguments), never a
traceback.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TextIO
from urllib.parse import quote

from tqdm import tqdm

from client import __version__
from client.config import DEFAULT_SITE, Config, UploadState
from client.http import (
    AtelierClient,
    AtelierError,
    AuthenticationError,
    ConflictError,
    IntegrityError,
    ModelInfo,
    ModelNotFoundError,
    NetworkError,
    NotFoundError,
    NotLoggedInError,
    UploadInfo,
    VersionInfo,
    sha256_of,
)

KINDS = ("checkpoint", "lora", "lycoris", "embedding", "vae", "controlnet")
VISIBILITIES = ("public", "unlisted", "private")
BASE_MODELS = ("sd1", "sd2", "sdxl", "sd3", "flux", "other")
# What the site accepts (registry/inspection.py); checked here to fail before any upload.
ALLOWED_EXTENSIONS = (
    ".safetensors", ".ckpt", ".pt", ".pth", ".bin",
    ".zip", ".tar", ".tar.gz", ".tgz",
    ".json", ".txt", ".md", ".yaml", ".model",
)  # fmt: skip
DEFAULT_CHUNK = 8 * 1024 * 1024
MAX_CHUNK = 512 * 1024 * 1024
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(AtelierError):
    """Arguments that do not fit together (exit status 2, like argparse's own errors)."""


def note(message: str) -> None:
    print(message, file=sys.stderr)


def progress(total: int, *, initial: int = 0, desc: str = "", quiet: bool = False) -> tqdm:
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=quiet,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=True,
    )


def chunk_size_arg(text: str) -> int:
    """``8M``, ``512K``, ``1G`` or a number of bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)i?[bB]?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 8M or 65536)")
    number, unit = int(match.group(1)), match.group(2).lower()
    size = number * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    if not 1 <= size <= MAX_CHUNK:
        raise argparse.ArgumentTypeError("the chunk size must be between 1 byte and 512M")
    return size


def _client(config: Config, site: str | None, *, login_required: bool) -> AtelierClient:
    if login_required and not config.token:
        raise NotLoggedInError()
    return AtelierClient(site or config.site, config.token)


# --- login / whoami --------------------------------------------------------------------------


def _read_password(args: argparse.Namespace, stdin: TextIO) -> str:
    if args.password_stdin:
        password = stdin.readline().rstrip("\r\n")
        if not password:
            raise AtelierError("No password on standard input.")
        return password
    if stdin.isatty():
        return getpass.getpass("Password: ")
    raise AtelierError("No terminal to ask for the password: pipe it with --password-stdin.")


def cmd_login(args: argparse.Namespace) -> int:
    config = Config.load()
    site = (args.site or config.site or DEFAULT_SITE).rstrip("/")
    if args.token:
        client = AtelierClient(site, args.token)
        try:
            me = client.whoami()
        except AuthenticationError as err:
            raise AuthenticationError(f"That token was refused: {err.message}") from err
        token, username = args.token, str(me.get("username", ""))
    else:
        username = args.username
        if not username:
            if not sys.stdin.isatty():
                raise AtelierError("Give --username (and --password-stdin), or --token.")
            username = input("Username: ").strip()
        password = _read_password(args, sys.stdin)
        client = AtelierClient(site, "")
        token, username = client.token_create(
            username=username, password=password, name=f"atelier-cli@{socket.gethostname()}"[:100]
        )
    config.site, config.token, config.username = site, token, username
    path = config.save()
    note(f"Logged in to {site} as {username}; the token is saved in {path}.")
    return EXIT_OK


def cmd_whoami(args: argparse.Namespace) -> int:
    config = Config.load()
    client = _client(config, args.site, login_required=True)
    me = client.whoami()
    print(f"{me.get('username', '')} on {client.site}")
    return EXIT_OK


# --- push ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalFile:
    path: Path
    remote_path: str  # the path inside the version ("unet/diffusion_pytorch_model.safetensors")


def _allowed(name: str) -> bool:
    return name.lower().endswith(ALLOWED_EXTENSIONS)


def collect_files(path: Path) -> tuple[list[LocalFile], bool]:
    """The files to push and whether ``path`` is a folder (a diffusers layout)."""
    if not path.exists():
        raise AtelierError(f"No such file or folder: {path}")
    if path.is_file():
        if not _allowed(path.name):
            raise AtelierError(
                f"Unsupported file type: {path.name} (allowed: {', '.join(ALLOWED_EXTENSIONS)})."
            )
        return [LocalFile(path, path.name)], False
    files: list[LocalFile] = []
    skipped: list[str] = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            local = Path(root) / name
            rel = local.relative_to(path).as_posix()
            if _allowed(name):
                files.append(LocalFile(local, rel))
            else:
                skipped.append(rel)
    if skipped:
        raise AtelierError(
            f"Unsupported file type in {path}: {', '.join(skipped[:5])}"
            f"{' …' if len(skipped) > 5 else ''} (allowed: {', '.join(ALLOWED_EXTENSIONS)})."
        )
    if not files:
        raise AtelierError(f"{path} holds no files to push.")
    return files, True


class Pusher:
    """Uploads files through the resumable upload API, remembering unfinished uploads."""

    def __init__(
        self,
        client: AtelierClient,
        state: UploadState,
        *,
        chunk_size: int,
        retries: int,
        quiet: bool,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client, self.state = client, state
        self.chunk_size, self.retries, self.quiet, self.sleep = chunk_size, retries, quiet, sleep

    def push(self, file: LocalFile) -> tuple[UploadInfo, str]:
        """The completed upload of ``file`` and its state key (forgotten once it is used)."""
        key = UploadState.key(self.client.site, file.path)
        size = file.path.stat().st_size
        if size == 0:
            raise AtelierError(f"{file.remote_path} is empty.")
        upload = self._resumable(key, file)
        if upload is None:
            with progress(size, desc=f"hashing {file.remote_path}", quiet=self.quiet) as bar:
                sha256 = sha256_of(file.path, on_bytes=bar.update)
            upload = self.client.upload_create(filename=file.path.name, size=size, sha256=sha256)
            self.state.set(key, upload.id)
        elif upload.status == "open":
            note(f"Resuming {file.remote_path}: the server has {upload.offset} of {size} bytes.")
        if upload.status != "complete":
            self._send(upload, file, size)
            upload = self._complete(upload, file, key)
        return upload, key

    def _resumable(self, key: str, file: LocalFile) -> UploadInfo | None:
        known = self.state.get(key)
        if not known:
            return None
        try:
            upload = self.client.upload_get(known)
        except NotFoundError:
            upload = None
        if upload is None or upload.status not in ("open", "complete"):
            self.state.forget(key)
            return None
        return upload

    def _send(self, upload: UploadInfo, file: LocalFile, size: int) -> None:
        offset, failures = upload.offset, 0
        with (
            open(file.path, "rb") as fh,
            progress(size, initial=offset, desc=file.remote_path, quiet=self.quiet) as bar,
        ):
            while offset < size:
                fh.seek(offset)
                data = fh.read(min(self.chunk_size, size - offset))
                try:
                    info = self.client.upload_append(upload.id, offset=offset, data=data)
                except ConflictError as err:  # the server's offset moved: go on from it
                    moved = err.details.get("offset")
                    if not isinstance(moved, int) or moved == offset:
                        raise
                    server_offset = moved
                except NetworkError as err:
                    failures += 1
                    if failures > self.retries:
                        raise NetworkError(
                            f"{err.message} {offset} of {size} bytes of {file.remote_path} are "
                            "on the server; rerun the same command to resume."
                        ) from err
                    self.sleep(min(30.0, 2.0 ** (failures - 1)))
                    server_offset = self.client.upload_get(upload.id).offset
                else:
                    failures = 0
                    if info.offset == offset:
                        raise AtelierError(
                            f"The server accepted none of the bytes of {file.remote_path}."
                        )
                    server_offset = info.offset
                if server_offset < offset:
                    note(f"The server has {server_offset} bytes; going on from there.")
                bar.update(server_offset - offset)
                offset = server_offset

    def _complete(self, upload: UploadInfo, file: LocalFile, key: str) -> UploadInfo:
        try:
            return self.client.upload_complete(upload.id)
        except (NetworkError, AuthenticationError):
            raise
        except AtelierError as err:
            self.state.forget(key)  # the server refused the file: a rerun starts afresh
            raise AtelierError(
                f"{file.remote_path} was refused: {err.message}",
                status=err.status,
                code=err.code,
                details=err.details,
            ) from err


def model_page_url(site: str, model: ModelInfo, version: VersionInfo) -> str:
    slug = f"{model.slug}/" if model.slug else ""
    return f"{site}/models/{model.id}/{slug}?version={version.id}"


def cmd_push(args: argparse.Namespace) -> int:
    if not args.model and not (args.name and args.kind):
        raise UsageError("--name and --kind are required for a new model (or give --model ID).")
    files, is_folder = collect_files(Path(args.path).expanduser())
    config = Config.load()
    client = _client(config, args.site, login_required=True)
    pusher = Pusher(
        client, UploadState(), chunk_size=args.chunk_size, retries=args.retries, quiet=args.quiet
    )
    pushed: list[tuple[UploadInfo, str, LocalFile]] = []
    for file in files:
        upload, key = pusher.push(file)
        pushed.append((upload, key, file))
    if args.model:
        model = client.model_get(args.model)
    else:
        model = client.model_create(
            name=args.name,
            kind=args.kind,
            description=args.description,
            tags=args.tag,
            visibility=args.visibility,
        )
    version = client.version_create(
        model.id,
        name=args.version,
        files=[(upload.id, file.remote_path) for upload, _, file in pushed],
        trigger_words=args.trigger,
        base_model=args.base_model or "",
        layout="diffusers" if is_folder else "",
    )
    for _, key, _ in pushed:
        pusher.state.forget(key)
    if args.publish:
        version = client.version_publish(version.id)
    state = "published" if version.status == "published" else "saved as a draft"
    note(f"{model.name} {version.name}: {len(pushed)} file(s) {state}.")
    print(model_page_url(client.site, model, version))
    return EXIT_OK


# --- pull ------------------------------------------------------------------------------------

_SPEC = re.compile(r"^(?P<model>[^@\s]+)(?:@(?P<version>[^@\s]+))?$")


def resolve_model(client: AtelierClient, spec: str) -> tuple[ModelInfo, str | None]:
    match = _SPEC.match(spec.strip())
    if match is None:
        raise AtelierError(f"{spec!r} is not MODEL[@VERSION] (MODEL: an id or owner/slug).")
    model_part, version_part = match.group("model"), match.group("version")
    if model_part.isdigit():
        return client.model_get(int(model_part)), version_part
    owner, _, slug = model_part.partition("/")
    if not owner or not slug or "/" in slug:
        raise AtelierError(f"{model_part!r} is neither a model id nor owner/slug.")
    return client.model_find(owner=owner, slug=slug), version_part


def pick_version(model: ModelInfo, wanted: str | None) -> int:
    if not model.versions:
        raise ModelNotFoundError(f"{model.owner}/{model.slug} has no version you can download.")
    if wanted is None:
        published = [v for v in model.versions if v.status in ("published", "")]
        return (published or model.versions)[0].id
    for version in model.versions:
        if version.name == wanted:
            return version.id
    if wanted.isdigit():
        for version in model.versions:
            if version.id == int(wanted):
                return version.id
    names = ", ".join(v.name for v in model.versions)
    raise ModelNotFoundError(f"{model.owner}/{model.slug} has no version {wanted!r} ({names}).")


def safe_destination(out: Path, remote_path: str) -> Path:
    parts = PurePosixPath(remote_path).parts
    if not parts or remote_path.startswith("/") or ".." in parts or "\\" in remote_path:
        raise AtelierError(f"The server sent an unsafe file path: {remote_path!r}.")
    return out.joinpath(*parts)


def pull_file(
    client: AtelierClient, url: str, dest: Path, *, size: int, sha256: str, quiet: bool
) -> str:
    """Download to ``dest`` (resuming ``dest.part``); ``"downloaded"``, ``"resumed"`` or
    ``"up to date"``. Nothing is renamed into place before its SHA-256 matches."""
    if dest.is_file() and dest.stat().st_size == size and sha256_of(dest) == sha256:
        return "up to date"
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    bar = progress(size, desc=dest.name, quiet=quiet)

    def on_start(offset: int) -> None:
        if offset:
            with open(part, "rb") as fh:
                while chunk := fh.read(1024 * 1024):
                    digest.update(chunk)
            note(f"Resuming {dest.name} at {offset} of {size} bytes.")
        bar.update(offset)

    def on_chunk(chunk: bytes) -> None:
        digest.update(chunk)
        bar.update(len(chunk))

    with bar:
        started = client.download(url, part, on_start=on_start, on_chunk=on_chunk)
    got = digest.hexdigest()
    if sha256 and got != sha256:
        part.unlink(missing_ok=True)  # these bytes are wrong; the good file, if any, stays
        raise IntegrityError(
            f"{dest.name}: SHA-256 mismatch (expected {sha256}, got {got}); "
            "the partial download was removed, rerun to download it again."
        )
    os.replace(part, dest)
    return "resumed" if started else "downloaded"


def cmd_pull(args: argparse.Namespace) -> int:
    config = Config.load()
    client = _client(config, args.site, login_required=False)
    model, wanted = resolve_model(client, args.model)
    version = client.version_get(pick_version(model, wanted))
    if not version.files:
        raise ModelNotFoundError(f"{model.name} {version.name} has no files.")
    out = Path(args.out).expanduser()
    for file in version.files:
        dest = safe_destination(out, file.path)
        url = file.download_url or (
            f"/api/download/models/{version.id}?type={quote(file.path, safe='')}"
        )
        outcome = pull_file(client, url, dest, size=file.size, sha256=file.sha256, quiet=args.quiet)
        note(f"{dest}: {outcome}")
    only = version.files[0].path if len(version.files) == 1 else ""
    print(safe_destination(out, only) if only else out)
    return EXIT_OK


# --- entry point -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--site", help="the site's URL (default: the one you logged in to)")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    parser = argparse.ArgumentParser(
        prog="atelier", description="Push and pull Stable Diffusion models to and from Atelier."
    )
    parser.add_argument("--version", action="version", version=f"atelier {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    login = sub.add_parser("login", parents=[common], help="store an API token for a site")
    login.add_argument("--username", "-u")
    secret = login.add_mutually_exclusive_group()
    secret.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    secret.add_argument("--token", help="an API token made on the site's Tokens page")
    login.set_defaults(func=cmd_login)

    whoami = sub.add_parser("whoami", parents=[common], help="who the stored token is")
    whoami.set_defaults(func=cmd_whoami)

    push = sub.add_parser("push", parents=[common], help="upload a model file or folder")
    push.add_argument("path", help="a model file, or a diffusers folder")
    push.add_argument("--name", help="the model's name (required for a new model)")
    push.add_argument("--kind", choices=KINDS, help="required for a new model")
    push.add_argument("--version", default="v1", help="the version's name (default: v1)")
    push.add_argument(
        "--trigger", action="append", default=[], metavar="WORD", help="a trigger word (repeatable)"
    )
    push.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    push.add_argument("--description", default="", help="Markdown")
    push.add_argument("--visibility", choices=VISIBILITIES, default="public")
    push.add_argument("--base-model", choices=BASE_MODELS, help="default: detected")
    push.add_argument(
        "--model",
        type=int,
        metavar="ID",
        help="add the version to this existing model instead of a new one",
    )
    push.add_argument("--publish", action="store_true", help="publish it (default: a draft)")
    push.add_argument(
        "--chunk-size",
        type=chunk_size_arg,
        default=DEFAULT_CHUNK,
        help="bytes per request (default: 8M)",
    )
    push.add_argument(
        "--retries",
        type=int,
        default=3,
        help="network retries per chunk before giving up (default: 3)",
    )
    push.set_defaults(func=cmd_push)

    pull = sub.add_parser("pull", parents=[common], help="download every file of a version")
    pull.add_argument("model", metavar="MODEL[@VERSION]", help="an id or owner/slug")
    pull.add_argument("--out", default=".", help="the folder to write to (default: here)")
    pull.set_defaults(func=cmd_pull)

    from client.node import add_node_parser

    add_node_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage and the problem
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except UsageError as err:
        note(f"atelier {args.command}: error: {err.message}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        note("atelier: interrupted; rerun the same command to resume.")
        return EXIT_INTERRUPTED
    except AtelierError as err:
        note(f"atelier: error: {err.message}")
        return EXIT_ERROR
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        note(f"atelier: error: {err.strerror or err}{where}")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
