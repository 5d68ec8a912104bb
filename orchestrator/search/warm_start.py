"""`search.warm_start`: the best configurations of a finished study, run first in a new one.

A study of a related question (the same data with another encoder, a narrower space) knows
which configurations did well. Queued ahead of any sampled trial, they are the new study's first
trials, and its sampler learns from their results as from any other.

The source is read in preflight (`read_warm_start`), before anything exists, and never written:
a plain name is a study in `search.storage`; a URL (`sqlite:///old.db`, `postgresql://...`) names
another storage, with `#study_name` where it holds several. Of each of its best COMPLETE trials
only the parameters this space searches, at values this space can take, are kept; what is left
must differ from the configurations already taken. They are queued under the study lock, once in
the study's life (its user attr `warm_started_from` says it was done), however many processes
drive it and however often it is resumed; each queued trial says where it came from (user attr
`warm_start_from`: `<source>#<its trial number>`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from orchestrator.config import ExperimentConfig, ParamSpace, paths, space
from orchestrator.config.secrets import redact
from orchestrator.data import DataError
from orchestrator.search.study import TAKEN, StorageError, _key, _params, open_readonly, read_storage

KEY = "search.warm_start"
DONE = "warm_started_from"  # study user attr: {"source", "trials": [[number, source's number], ...], "left_out"}
FROM = "warm_start_from"  # trial user attr: "<source>#<the source's trial number>"
_OUT = object()  # a value this space cannot take


@dataclass(frozen=True)
class WarmStart:
    source: str  # the source study as summaries and tags show it: its name, or its storage (redacted)#name
    configurations: list[tuple[int, dict]]  # (the source's trial number, its parameters in this space), best first
    left_out: list[str] = field(default_factory=list)  # what of the source is not carried over, and why


def read_warm_start(cfg: ExperimentConfig) -> WarmStart | None:
    """The configurations `search.warm_start` queues first; None when it is unset or this study
    has taken its warm start already. `DataError` naming search.warm_start for a source that
    cannot be used. Reads only: creates no file, table or study."""
    s = cfg.search
    if s.warm_start is None:
        return None
    before = _done_before(cfg)
    if before is not None:
        if not _same_source(before["source"], cfg):
            raise DataError(f"{KEY}: study {cfg.study_name!r} took its warm start from {before['source']} already, and "
                            f"a study takes one; to resume it, set {KEY} to that or remove it; to warm-start from "
                            f"{redact(s.warm_start)}, start a new study (search.study_name={cfg.study_name}-2)")
        return None
    url, name, elsewhere = _where(cfg)
    shown = redact(url)
    fix = (f"set {KEY} to a finished study: its name in search.storage, or its storage's URL "
           f"(sqlite:///path.db, with #study_name where it holds several); or remove {KEY}")
    try:
        storage, names = read_storage(url, KEY, fix)
    except StorageError as e:
        raise DataError(str(e)) from None
    held = ", ".join(repr(n) for n in names[:20]) or "none"
    if not names:
        raise DataError(f"{KEY}: {shown} holds no study; {fix}")
    if name is None:
        if len(names) > 1:
            raise DataError(f"{KEY}: {shown} holds {len(names)} studies ({held}); name one after a #: "
                            f"{shown}#{names[0]}")
        name = names[0]
    if name not in names:
        raise DataError(f"{KEY}: {shown} holds no study named {name!r} (it holds {held}); {fix}")
    source = f"{shown}#{name}" if elsewhere else name
    if name == cfg.study_name and _same_storage(url, s.storage):
        raise DataError(f"{KEY}: {source!r} is this study itself (search.study_name={cfg.study_name}); "
                        f"name another, finished study")
    study = optuna.load_study(study_name=name, storage=storage)
    return WarmStart(source, *_best_configurations(cfg, study, source))


def enqueue(study: optuna.Study, plan: WarmStart) -> dict | None:
    """Queue `plan`'s configurations ahead of any sampled trial (`study.ask` takes WAITING trials
    first), once in the study's life; what was queued (`record`), or None when it was done
    before. The caller holds the study lock, so that of several processes starting together one
    queues and the others see it done."""
    if DONE in study.user_attrs:
        return None
    # A study resumed with warm start newly set may have run a configuration already.
    taken = {_key(_params(t)) for t in study.get_trials(deepcopy=False, states=TAKEN)}
    wanted = {f"{plan.source}#{number}": number for number, params in plan.configurations
              if _key(params) not in taken}
    for number, params in plan.configurations:
        if f"{plan.source}#{number}" in wanted:
            study.enqueue_trial(params, user_attrs={FROM: f"{plan.source}#{number}"})
    # Optuna's enqueue_trial returns nothing: the queued trials are found by their attribution.
    queued = [[t.number, wanted[t.user_attrs[FROM]]] for t in study.get_trials(deepcopy=False)
              if t.user_attrs.get(FROM) in wanted]
    done = {"source": plan.source, "trials": queued, "left_out": plan.left_out}
    study.set_user_attr(DONE, done)
    return done


def record(study: optuna.Study) -> dict | None:
    """What the study's warm start queued (`enqueue`), if it had one."""
    return study.user_attrs.get(DONE)


def tags(done: dict) -> dict[str, str]:
    """The parent run's tags: the source study, and the numbers of the trials it queued."""
    return {"warm_start": done["source"], "warm_start_trials": ",".join(str(n) for n, _ in done["trials"])}


def note(done: dict) -> str:
    """The summary's line on where the first trials came from."""
    trials = done["trials"]
    line = f"warm start: {len(trials)} configuration(s) from {done['source']}"
    if trials:
        line += (f" (its trials {', '.join(str(s) for _, s in trials)}) queued first as trials "
                 f"{', '.join(str(n) for n, _ in trials)}")
    if done.get("left_out"):
        line += f"; left out: {'; '.join(done['left_out'])}"
    return line


def _where(cfg: ExperimentConfig) -> tuple[str, str | None, bool]:
    """The source's storage URL, its study name (None: the storage's only one), and whether it
    is a storage other than search.storage."""
    raw = cfg.search.warm_start.strip()
    if "://" not in raw:
        return cfg.search.storage, raw, False
    url, hash_, name = raw.rpartition("#")
    if not hash_:
        return raw, None, True
    return url, name or None, True


def _same_storage(a: str, b: str) -> bool:
    return paths.absolute_sqlite(a, create=False) == paths.absolute_sqlite(b, create=False)


def _done_before(cfg: ExperimentConfig) -> dict | None:
    """What this study's warm start queued, if it took one: a resumed search does not read the
    source again, which may be gone by now."""
    try:
        study = open_readonly(cfg)
    except StorageError:
        # No study yet; or a storage that cannot be read, which opening the study reports next.
        return None
    return study.user_attrs.get(DONE)


def _same_source(recorded: str, cfg: ExperimentConfig) -> bool:
    """Whether `search.warm_start` names the source the study recorded (`WarmStart.source`:
    a study name, or a redacted storage URL and #name), without reading the source."""
    url, name, elsewhere = _where(cfg)
    if not elsewhere:
        return recorded == name
    shown, _, recorded_name = recorded.rpartition("#")
    return shown == redact(url) and name in (None, recorded_name)


def _best_configurations(cfg: ExperimentConfig, study: optuna.Study, source: str
                         ) -> tuple[list[tuple[int, dict]], list[str]]:
    """The source's best COMPLETE trials, by its own direction, as configurations of this space:
    up to `search.warm_start_trials` distinct ones (and no more than `search.n_trials`)."""
    if len(study.directions) > 1:
        raise DataError(f"{KEY}: {source} optimises {len(study.directions)} objectives; a warm start ranks "
                        f"the trials of a study with one")
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        states = sorted({t.state.name for t in trials})
        counts = ", ".join(f"{sum(t.state.name == st for t in trials)} {st}" for st in states) or "none"
        raise DataError(f"{KEY}: {source} has no COMPLETE trial to start from (its trials: {counts}); "
                        f"name a study that has finished trials")
    theirs = sorted({name for t in complete for name in t.params})
    shared = [name for name in theirs if name in cfg.space]
    if not shared:
        raise DataError(f"{KEY}: none of {source}'s parameters ({', '.join(theirs) or 'none'}) is searched in "
                        f"this experiment's space ({', '.join(cfg.space) or 'empty'}); warm-start from a study "
                        f"of the same hyperparameters")
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    ranked = sorted(complete, key=lambda t: (-t.value if maximize else t.value, t.number))
    # The grid sampler cannot complete a configuration that lacks some of its parameters.
    grid = space.configurations(cfg.space, cfg.training) if cfg.search.sampler == "grid" else None
    most = min(cfg.search.warm_start_trials, cfg.search.n_trials or math.inf)
    chosen: list[tuple[int, dict]] = []
    seen: set[tuple] = set()
    outside: list[str] = []
    partial = 0
    for t in ranked:
        if len(chosen) >= most:
            break
        params = {}
        for name in shared:
            if name not in t.params:
                continue
            value = _fit(cfg.space[name], t.params[name])
            if value is _OUT:
                outside.append(f"{name}={t.params[name]!r} (trial {t.number})")
            else:
                params[name] = value
        if grid is not None and params not in grid:
            partial += 1
            continue
        if params and _key(params) not in seen:
            seen.add(_key(params))
            chosen.append((t.number, params))
    left_out = []
    if len(shared) < len(theirs):
        left_out.append(f"{', '.join(n for n in theirs if n not in cfg.space)} (not searched here)")
    if outside:
        left_out.append(f"{', '.join(outside[:5])}{' ...' if len(outside) > 5 else ''} (outside this space)")
    if partial:
        left_out.append(f"{partial} configuration(s) the grid sampler cannot run (not one of its points)")
    if not chosen:
        raise DataError(f"{KEY}: none of {source}'s COMPLETE trials has a configuration this space can take: "
                        f"{'; '.join(left_out)}; widen space: to hold them, or warm-start from another study")
    return chosen, left_out


def _fit(p: ParamSpace, value):
    """`value` as this space holds it (a stepped float on the space's own grid), or `_OUT`."""
    if p.choices is not None:
        # 1 == True in Python, but a boolean choice is not a number.
        return next((c for c in p.choices if c == value and isinstance(c, bool) == isinstance(value, bool)), _OUT)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not p.low <= value <= p.high:
        return _OUT
    if p.is_int:
        step = int(p.step or 1)
        if value != int(value) or (int(value) - p.low) % step:
            return _OUT
        return int(value)
    if p.step is None:
        return float(value)
    i = round((value - p.low) / p.step)
    on_grid = i * p.step + p.low  # the arithmetic Optuna uses for a stepped float (config/space.py)
    return on_grid if math.isclose(on_grid, value, rel_tol=1e-9, abs_tol=1e-12) else _OUT
