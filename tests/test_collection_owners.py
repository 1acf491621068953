"""One owner per collection: only its module reads or writes it (`db[NAME]`, `get_collection`,
`drop_collection`, `rename`) or defines its name. Everyone else calls the owner's functions.
Read from the source of `app` and `training` with `ast`."""

from __future__ import annotations

import ast

from tests.support import source_modules

# collection -> (owning module, the constant that names it there)
OWNERS = {
    "movies": ("app.services.movies_repo", "MOVIES"),
    "movies_staging": ("app.services.movies_repo", "STAGING"),
    "meta": ("app.services.meta_repo", "META"),
    "movies_changes": ("app.services.change_log", "MOVIES_CHANGES"),
    "users": ("app.services.credentials", "USERS"),
    "api_keys": ("app.services.credentials", "API_KEYS"),
    "api_key_uses": ("app.services.credentials", "API_KEY_USES"),
    "model_versions": ("app.services.model_versions", "MODEL_VERSIONS"),
    "prediction_log": ("app.services.prediction_log", "PREDICTION_LOG"),
    "predicted_films": ("app.services.prediction_log", "PREDICTED_FILMS"),
    "outcomes": ("app.services.outcomes", "OUTCOMES"),
    "audit": ("app.services.audit", "AUDIT"),
}
COLLECTION_CALLS = {"get_collection", "drop_collection", "create_collection", "rename"}


def _collection(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The owned collection an expression names: a literal, an imported constant (under any
    alias), or `module.CONSTANT`."""
    if isinstance(node, ast.Constant) and node.value in OWNERS:
        return str(node.value)
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        for collection, (_owner, constant) in OWNERS.items():
            if node.attr == constant:
                return collection
    return None


def trespasses(module: str, tree: ast.Module) -> list[str]:
    """Where `module` touches a collection it does not own, or names one as its own."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                for collection, (owner, constant) in OWNERS.items():
                    if node.module == owner and alias.name == constant:
                        aliases[alias.asname or alias.name] = collection
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        named: str | None = None
        if isinstance(node, ast.Subscript):
            named = _collection(node.slice, aliases)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in COLLECTION_CALLS:
                named = _collection(node.args[0], aliases)
        elif (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and node.value.value in OWNERS
            and any(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)
        ):
            named = str(node.value.value)  # a collection-name constant of its own
        if named is not None and OWNERS[named][0] != module:
            line = getattr(node, "lineno", 0)
            found.append((line, f"{module}:{line} uses `{named}`"))
    return [hit for _line, hit in sorted(found)]


def test_only_the_owner_reads_or_writes_its_collection() -> None:
    sources = source_modules()
    for owner, _constant in OWNERS.values():
        assert owner in sources, f"owner {owner} is gone: update OWNERS"
    found = [
        hit
        for module, path in sources.items()
        for hit in trespasses(module, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    ]
    assert not found, "collections touched outside their owner:\n" + "\n".join(found)


def test_a_trespass_is_found() -> None:
    code = """
from app.services.movies_repo import MOVIES as FILMS
from app.services import meta_repo
MOVIES_AGAIN = "movies"
async def f(db):
    await db[FILMS].find_one({})
    await db["meta"].find_one({})
    await db[meta_repo.META].find_one({})
    await db.drop_collection("movies_staging")
    await db["ingest_runs"].find_one({})
"""
    found = trespasses("app.services.elsewhere", ast.parse(code))
    assert [hit.split("`")[1] for hit in found] == [
        "movies",
        "movies",
        "meta",
        "meta",
        "movies_staging",
    ], found
    assert trespasses("app.services.movies_repo", ast.parse("db[MOVIES]\nMOVIES = 'movies'")) == []
