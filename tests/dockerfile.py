"""A Dockerfile's stages (COPY, ENV, ENTRYPOINT, CMD, HEALTHCHECK) rebuilt in a folder, and compose's ${VAR} values."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass
class Copy:
    sources: list[str]
    dest: str  # absolute, in the image
    from_stage: str | None = None


@dataclass
class Stage:
    name: str | None
    base: str
    workdir: str = "/"
    copies: list[Copy] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)
    entrypoint: object = None  # list[str] (exec form) or str (shell form)
    cmd: object = None
    healthcheck: object = None  # list[str], str, or "NONE"


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, `\\` continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def _exec_or_shell(arguments: str) -> object:
    if arguments.startswith("["):
        return json.loads(arguments)
    return arguments


def _expand(value: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def _env_pairs(arguments: str, env: dict[str, str]) -> dict[str, str]:
    words = shlex.split(arguments)
    if words and "=" not in words[0]:  # legacy `ENV NAME value with spaces`
        return {words[0]: _expand(" ".join(words[1:]), env)}
    pairs = {}
    for word in words:
        name, _, value = word.partition("=")
        pairs[name] = _expand(value, {**env, **pairs})
    return pairs


def _copy(arguments: str, workdir: str) -> Copy:
    words = shlex.split(arguments) if not arguments.lstrip().startswith("[") else []
    options = {}
    if not words:  # JSON form, possibly after options
        head, _, body = arguments.partition("[")
        words = [*shlex.split(head), *json.loads("[" + body)]
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        options[name] = value
    *sources, dest = words
    absolute = str(PurePosixPath(workdir) / dest) + ("/" if dest.endswith("/") or dest == "." else "")
    return Copy(sources, absolute, options.get("from"))


def stages(text: str) -> list[Stage]:
    """Every stage, with what it inherits from an earlier stage it is built FROM."""
    found: list[Stage] = []
    for keyword, arguments in instructions(text):
        if keyword == "FROM":
            words = [w for w in arguments.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            parent = next((s for s in found if s.name == words[0]), None)
            stage = Stage(name, words[0])
            if parent is not None:
                stage.workdir, stage.env, stage.volumes = parent.workdir, dict(parent.env), list(parent.volumes)
                stage.copies = list(parent.copies)
                stage.entrypoint, stage.cmd, stage.healthcheck = parent.entrypoint, parent.cmd, parent.healthcheck
            found.append(stage)
            continue
        if not found:
            continue  # ARG before FROM
        stage = found[-1]
        if keyword == "WORKDIR":
            stage.workdir = str(PurePosixPath(stage.workdir) / _expand(arguments, stage.env))
        elif keyword in ("COPY", "ADD"):
            stage.copies.append(_copy(arguments, stage.workdir))
        elif keyword == "ENV":
            stage.env.update(_env_pairs(arguments, stage.env))
        elif keyword == "VOLUME":
            stage.volumes += _exec_or_shell(arguments) if arguments.startswith("[") else arguments.split()
        elif keyword == "ENTRYPOINT":
            stage.entrypoint = _exec_or_shell(arguments)
            stage.cmd = None  # Docker: a new ENTRYPOINT resets an inherited CMD
        elif keyword == "CMD":
            stage.cmd = _exec_or_shell(arguments)
        elif keyword == "HEALTHCHECK":
            words = arguments.split(None, 1)
            while words and words[0].startswith("--"):
                words = words[1].split(None, 1) if len(words) > 1 else []
            if words and words[0].upper() == "NONE":
                stage.healthcheck = "NONE"
            elif words and words[0].upper() == "CMD":
                stage.healthcheck = _exec_or_shell(words[1].strip())
    return found


class DockerIgnore:
    """The build context's .dockerignore: patterns as Docker reads them (`**`, `*`, `?`, `!` exceptions)."""

    def __init__(self, context: Path) -> None:
        path = context / ".dockerignore"
        lines = path.read_text().splitlines() if path.is_file() else []
        self.rules = [(_pattern(line.strip().lstrip("!").strip()), line.strip().startswith("!"))
                      for line in lines if line.strip() and not line.strip().startswith("#")]

    def excluded(self, relative: str) -> bool:
        """Whether a path of the context (posix, relative) is left out; a folder left out takes its contents."""
        parts = PurePosixPath(relative).parts
        verdict = False
        for pattern, exception in self.rules:
            if any(pattern.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
                verdict = not exception
        return verdict


def _pattern(text: str) -> re.Pattern:
    text = str(PurePosixPath("/" + text)).lstrip("/")  # Docker cleans each pattern (filepath.Clean)
    out, i = "", 0
    while i < len(text):
        if text.startswith("**", i):
            out, i = out + ".*", i + 2
            if text.startswith("/", i):
                out, i = out[:-2] + "(?:.*/)?", i + 1
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return re.compile(out)


class ImageRoot:
    """The final stage's file system in a folder: absolute image paths map to `root / path`."""

    def __init__(self, root: Path, stage: Stage) -> None:
        self.root = root
        self.stage = stage

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    @property
    def workdir(self) -> Path:
        return self.path(self.stage.workdir)

    def prefixes(self) -> list[str]:
        """The image's own folders: WORKDIR, VOLUMEs and where COPY puts files (never / itself)."""
        found = {self.stage.workdir, *self.stage.volumes, *(c.dest.rstrip("/") for c in self.stage.copies)}
        return sorted((p for p in found if p not in ("", "/")), key=len, reverse=True)

    def rewrite(self, value: str) -> str:
        """An image path in a value (as in ENV) made this folder's: /app/hub.yaml -> <root>/app/hub.yaml."""
        for prefix in self.prefixes():
            if value == prefix or value.startswith(prefix + "/"):
                return str(self.path(value))
        return value

    def copy_from_context(self, context: Path) -> list[Copy]:
        """Run the stage's COPY/ADD from the build context as .dockerignore leaves it; returns the copies from
        other stages (not run)."""
        skipped = []
        ignore = DockerIgnore(context)
        for copy in self.stage.copies:
            if copy.from_stage is not None:
                skipped.append(copy)
                continue
            copy_sources(context, copy, self.path(copy.dest), ignore)
        for volume in self.stage.volumes:
            self.path(volume).mkdir(parents=True, exist_ok=True)
        return skipped


def copy_sources(context: Path, copy: Copy, target: Path, ignore: DockerIgnore) -> None:
    """Docker's COPY rules: a folder's contents go into dest; several sources need a folder dest."""
    into_folder = copy.dest.endswith("/") or len(copy.sources) > 1

    def left_out(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if ignore.excluded((Path(folder) / n).relative_to(context).as_posix())}

    for source in copy.sources:
        matches = sorted(context.glob(source)) if any(ch in source for ch in "*?[") else [context / source]
        for path in matches:
            if not path.exists() or ignore.excluded(path.relative_to(context).as_posix()):
                raise FileNotFoundError(f"COPY {source}: not in the build context {context}"
                                        f"{' (.dockerignore leaves it out)' if path.exists() else ''}")
            if path.is_dir():
                shutil.copytree(path, target, ignore=left_out, dirs_exist_ok=True)
            else:
                destination = target / path.name if into_folder else target
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)
