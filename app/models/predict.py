"""Request and response bodies of the prediction and model-management API.

Films use TMDB's own field names. List fields take TMDB objects (`{"id": 28, "name":
"Action"}`, `{"iso_3166_1": "US", "name": "United States of America"}`) or plain names; every
fact is optional (a missing fact is "unknown", and the model was trained to live with that).
Fields that only exist after release (revenue, popularity, votes, ...) are ignored, so a
full TMDB record can be posted as is, from the Kaggle export or straight from TMDB's API
(`keywords` wrapped in `{"keywords": [...]}`, cast and crew under `credits`). TMDB holds list
items whose name is blank (a keyword named by a lone non-breaking space, a language without a
name): such an item is dropped and counted (`Film.dropped`), never a 422 for the batch.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal, Required

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    StringConstraints,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails
from typing_extensions import TypedDict

from app.ml.card import ModelCard
from app.models.monitoring import DriftSummary, MlflowSync, ModelName
from app.models.predict_fast import (
    ID_MAX,
    INTERVAL_LEVEL_MAX,
    INTERVAL_LEVEL_MIN,
    MAX_ITEMS,
    fast_items,
    flatten_api_record,
)

# Stripped of Unicode whitespace (U+00A0 included) first. A list item whose name (or code)
# is then empty fails here, inside pydantic-core, and `Film._drop_blank_names` drops it.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10)]


# List items are TypedDicts, not models: validated entirely inside pydantic-core, they cost
# ~5x less than model instances (a 1,000-film batch carries ~30,000 of them). Unknown keys
# (`id`, `credit_id`, `profile_path`, ...) are accepted and dropped.
class TmdbRef(TypedDict, total=False):
    """A TMDB list object such as `{"id": 28, "name": "Action"}`."""

    id: int
    name: Required[Name]


class CountryRef(TypedDict, total=False):
    """`{"iso_3166_1": "US", "name": "United States of America"}`; the code is used."""

    iso_3166_1: Required[Code]
    name: str


class LanguageRef(TypedDict, total=False):
    """`{"iso_639_1": "en", "name": "English"}`; the code is used."""

    iso_639_1: Required[Code]
    name: str


class CastRef(TypedDict, total=False):
    name: Required[Name]
    character: str | None
    order: Annotated[int, Field(ge=0)]


class CrewRef(TypedDict, total=False):
    name: Required[Name]
    job: Annotated[str | None, Field(description='"Director" feeds the director features')]
    department: str | None


def _shape(value: Any) -> str:
    # A plain name or a TMDB object: telling pydantic which one up front gives one precise
    # error per bad item (e.g. `items.0.genres.2.object.name`) instead of one per union
    # member.
    return "name" if isinstance(value, str) else "object"


def _country_shape(value: Any) -> str:
    if isinstance(value, str):
        return "name"
    return "code" if isinstance(value, dict) and "iso_3166_1" in value else "object"


def _language_shape(value: Any) -> str:
    if isinstance(value, str):
        return "name"
    return "code" if isinstance(value, dict) and "iso_639_1" in value else "object"


NameOrRef = Annotated[
    Annotated[Name, Tag("name")] | Annotated[TmdbRef, Tag("object")], Discriminator(_shape)
]
NameOrCountry = Annotated[
    Annotated[Name, Tag("name")]
    | Annotated[CountryRef, Tag("code")]
    | Annotated[TmdbRef, Tag("object")],
    Discriminator(_country_shape),
]
NameOrLanguage = Annotated[
    Annotated[Name, Tag("name")]
    | Annotated[LanguageRef, Tag("code")]
    | Annotated[TmdbRef, Tag("object")],
    Discriminator(_language_shape),
]
NameOrCast = Annotated[
    Annotated[Name, Tag("name")] | Annotated[CastRef, Tag("object")], Discriminator(_shape)
]
NameOrCrew = Annotated[
    Annotated[Name, Tag("name")] | Annotated[CrewRef, Tag("object")], Discriminator(_shape)
]
Listed = list[NameOrRef]

# Fields whose blank-named items are dropped rather than refused (a field of the film, not
# a list, for the collection).
DROPPABLE = frozenset(
    {
        "genres",
        "production_companies",
        "production_countries",
        "spoken_languages",
        "keywords",
        "belongs_to_collection",
        "cast",
        "crew",
    }
)
Dropped = tuple[str, int | None]  # (field, index in the list as posted; None: not a list)


def _blank_name(error: ErrorDetails) -> Dropped | None:
    """The item an error is about when the error is a name or code blank after stripping:
    `("keywords", 2, "object", "name")`, `("genres", 0, "name")` (a plain name),
    `("belongs_to_collection", "object", "name")`."""
    loc = error["loc"]
    if error["type"] != "string_too_short" or len(loc) < 2 or loc[0] not in DROPPABLE:
        return None
    field = str(loc[0])
    if field == "belongs_to_collection":
        return field, None
    return (field, loc[1]) if isinstance(loc[1], int) else None


def _without(data: dict[str, Any], dropped: list[Dropped]) -> dict[str, Any]:
    cleaned = dict(data)
    for field in {f for f, _ in dropped}:
        gone = {i for f, i in dropped if f == field}
        if field == "belongs_to_collection":
            cleaned[field] = None
        else:
            cleaned[field] = [item for i, item in enumerate(data[field]) if i not in gone]
    return cleaned


class Film(BaseModel):
    """A film's pre-release facts."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "example": {
                "title": "Interstellar Heist",
                "budget": 120_000_000,
                "runtime": 131,
                "release_date": "2026-07-17",
                "genres": [{"id": 28, "name": "Action"}, "Science Fiction"],
                "original_language": "en",
                "production_companies": ["Warner Bros. Pictures"],
                "production_countries": [{"iso_3166_1": "US", "name": "United States of America"}],
                "spoken_languages": ["en"],
                "keywords": ["heist", "space"],
                "homepage": "https://example.org/heist",
                "tagline": "Steal the stars.",
                "overview": "A crew of thieves plans the first robbery in orbit.",
                "cast": ["Tom Hardy", "Zendaya"],
                "crew": [{"name": "Christopher Nolan", "job": "Director"}],
            }
        },
    )

    id: int | None = Field(
        default=None,
        ge=1,
        le=ID_MAX,
        description="TMDB id, when the film has one: logged with the prediction, so that its "
        "actual revenue, once known, measures the model's live accuracy",
    )
    title: str | None = Field(default=None, max_length=500)
    budget: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="USD; 0 means unknown; below 1000 is read as millions",
    )
    runtime: float | None = Field(
        default=None, ge=0, le=1000, allow_inf_nan=False, description="Minutes"
    )
    release_date: date | None = Field(default=None, description="ISO date, e.g. 2026-07-17")
    original_language: str | None = Field(default=None, max_length=10, description="ISO 639-1")
    genres: Listed = Field(default_factory=list, max_length=50)
    production_companies: Listed = Field(default_factory=list, max_length=200)
    production_countries: list[NameOrCountry] = Field(
        default_factory=list, max_length=100, description="ISO 3166-1 codes or TMDB objects"
    )
    spoken_languages: list[NameOrLanguage] = Field(
        default_factory=list, max_length=100, description="ISO 639-1 codes or TMDB objects"
    )
    keywords: Listed = Field(default_factory=list, max_length=500)
    homepage: str | None = Field(default=None, max_length=2000)
    tagline: str | None = Field(default=None, max_length=2000)
    overview: str | None = Field(
        default=None, max_length=10_000, description="Synopsis (feeds the text features)"
    )
    content_rating: str | None = Field(
        default=None,
        max_length=20,
        description="US certification as rated before release: G, PG, PG-13, R, NC-17, NR",
    )
    belongs_to_collection: NameOrRef | None = None
    cast: list[NameOrCast] = Field(
        default_factory=list, max_length=1000, description="By billing order; the first 3 count"
    )
    crew: list[NameOrCrew] = Field(
        default_factory=list,
        max_length=5000,
        description="Objects with a job; plain names carry no job and are not used",
    )

    @field_validator("release_date", "budget", "runtime", "original_language", mode="before")
    @classmethod
    def _blank_is_unknown(cls, value: Any) -> Any:
        # TMDB exports use "" for unknown dates and languages.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="wrap")
    @classmethod
    def _drop_blank_names(cls, data: Any, handler: ModelWrapValidatorHandler[Film]) -> Film:
        # The common case costs one call: every item is checked by pydantic-core. Only a film
        # that fails pays for a look at its errors and a second validation without the items.
        if isinstance(data, dict) and ("credits" in data or isinstance(data.get("keywords"), dict)):
            data = flatten_api_record(data)
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors()
            dropped = [d for d in map(_blank_name, errors) if d is not None]
            if not dropped or not isinstance(data, dict):
                raise
            if len(dropped) < len(errors):
                # Refused for other reasons too: report those, at the indices as posted.
                others: list[InitErrorDetails] = [
                    {
                        "type": e["type"],
                        "loc": e["loc"],
                        "input": e["input"],
                        "ctx": e.get("ctx", {}),
                    }
                    for e in errors
                    if _blank_name(e) is None
                ]
                raise ValidationError.from_exception_data(exc.title, others) from None
            film = handler(_without(data, dropped))
            trimmed = TrimmedFilm.model_construct(film.model_fields_set, **dict(film))
            trimmed._dropped = dropped
            return trimmed

    @property
    def dropped(self) -> list[Dropped]:
        """The items dropped for a blank name, as (field, index in the list as posted)."""
        return []


class TrimmedFilm(Film):
    """A film that had list items dropped for a blank name. The record of them lives on this
    subclass because a private attribute on `Film` would cost every film an init call."""

    _dropped: list[Dropped] = PrivateAttr(default_factory=list)

    @property
    def dropped(self) -> list[Dropped]:
        return self._dropped


FILM_FIELDS = frozenset(Film.model_fields)


def _fast_film(values: dict[str, Any], posted: dict[str, Any]) -> Film:
    """A `Film` from values `fast_items` already checked: what `model_construct` does, minus
    the per-field default handling (every field is given), ~5x cheaper per film."""
    film = Film.__new__(Film)
    object.__setattr__(film, "__dict__", values)
    object.__setattr__(film, "__pydantic_fields_set__", FILM_FIELDS.intersection(posted))
    object.__setattr__(film, "__pydantic_extra__", None)
    object.__setattr__(film, "__pydantic_private__", None)
    return film


class PredictRequest(BaseModel):
    items: list[Film] = Field(min_length=1, max_length=MAX_ITEMS)
    interval_level: float | None = Field(
        default=None,
        ge=INTERVAL_LEVEL_MIN,
        le=INTERVAL_LEVEL_MAX,
        examples=[0.95],
        description="Revenue only: nominal coverage of the interval, one of the levels the "
        "model's card lists (0.5, 0.6, 0.7, 0.8, 0.9, 0.95 for models trained since issue 14); "
        "default 0.8",
    )
    # The canonical record of each film (`app.ml.features.film_record`) where the fast path
    # derived it while validating (None for a film pydantic validated); None when pydantic
    # validated the whole request.
    _records: list[dict[str, Any] | None] | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _fast_path(cls, data: Any, handler: ModelWrapValidatorHandler[PredictRequest]) -> Any:
        # Clean films (nearly all) are checked without pydantic; a film that needs coercion,
        # trimming or a dropped item is validated by pydantic alone; a film pydantic refuses
        # sends the whole request to pydantic, so the 422 names every bad film index and
        # field exactly as before.
        fast = fast_items(data)
        if fast is None:
            return handler(data)
        level = data.get("interval_level")
        # Only a plain number in range is taken as is; anything else (a string to coerce, a
        # value to refuse) is for pydantic, like a film that needs it.
        if level is not None and (
            type(level) not in (int, float) or not INTERVAL_LEVEL_MIN <= level <= INTERVAL_LEVEL_MAX
        ):
            return handler(data)
        films: list[Film] = []
        records: list[dict[str, Any] | None] = []
        for posted, checked in zip(data["items"], fast, strict=True):
            if checked is None:
                try:
                    films.append(Film.model_validate(posted))
                except ValidationError:
                    return handler(data)
                records.append(None)
            else:
                films.append(_fast_film(checked[0], posted))
                records.append(checked[1])
        request = (
            cls.model_construct(items=films)
            if level is None
            else cls.model_construct(items=films, interval_level=float(level))
        )
        request._records = records
        return request

    @property
    def records(self) -> list[dict[str, Any] | None] | None:
        """Per film, its canonical record when validation already derived it."""
        return self._records


class Interval(BaseModel):
    low: float = Field(examples=[41_000_000.0])
    high: float = Field(examples=[612_000_000.0])


class Contribution(BaseModel):
    feature: str = Field(
        examples=["budget"],
        description="Input field, or a group derived from several (text: overview, tagline "
        "and keywords; franchise: title and earlier films)",
    )
    contribution: float = Field(
        examples=[0.84],
        description="Change in the score due to this field versus an average or typical film "
        "(log revenue for revenue, probability for hit): SHAP values summed per field for tree "
        "models (the model card's `explanations`), occlusion otherwise",
    )


class RevenuePrediction(BaseModel):
    index: int
    title: str | None = None
    revenue: float = Field(examples=[158_000_000.0], description="Expected worldwide USD")
    interval: Interval
    contributions: list[Contribution] | None = None
    warnings: list[str] | None = Field(
        default=None,
        examples=[["keywords.3: blank name, item dropped"]],
        description="Present when input list items were dropped for a blank name",
    )


class HitPrediction(BaseModel):
    index: int
    title: str | None = None
    probability: float = Field(ge=0, le=1, examples=[0.7])
    hit: bool
    contributions: list[Contribution] | None = None
    warnings: list[str] | None = Field(
        default=None,
        examples=[["keywords.3: blank name, item dropped"]],
        description="Present when input list items were dropped for a blank name",
    )


class RevenueResponse(BaseModel):
    model: Literal["revenue"] = "revenue"
    model_version: str = Field(examples=["20250101T120000Z"])
    interval_level: float = Field(default=0.8, description="Nominal coverage of the interval")
    predictions: list[RevenuePrediction]
    dropped_items: int = Field(
        default=0, ge=0, description="Input list items dropped for a blank name, whole batch"
    )


class HitResponse(BaseModel):
    model: Literal["hit"] = "hit"
    model_version: str = Field(examples=["20250101T120000Z"])
    threshold: float = Field(description="P(hit) at or above which `hit` is true")
    predictions: list[HitPrediction]
    dropped_items: int = Field(
        default=0, ge=0, description="Input list items dropped for a blank name, whole batch"
    )


class EngagementIntervals(BaseModel):
    vote_count: Interval = Field(description="Votes: the 80% interval")
    vote_average: Interval = Field(description="Rating: the 80% interval")


class EngagementContributions(BaseModel):
    vote_count: list[Contribution] = Field(
        description="Change in log1p(votes) due to each field (0.69 doubles the votes)"
    )
    vote_average: list[Contribution] = Field(
        description="Change in the rating (points) due to each field"
    )


class EngagementPrediction(BaseModel):
    index: int
    title: str | None = None
    vote_count: float = Field(
        ge=0, examples=[1850.0], description="Expected number of TMDB votes (a whole number)"
    )
    vote_average: float = Field(
        ge=0,
        le=10,
        examples=[6.7],
        description="Expected TMDB rating (0-10) once the film has 10 or more votes",
    )
    intervals: EngagementIntervals
    contributions: EngagementContributions | None = Field(
        default=None,
        description="With `explain=true`: per output, the top input fields by contribution "
        "against an average or typical film",
    )
    warnings: list[str] | None = Field(
        default=None,
        examples=[["keywords.3: blank name, item dropped"]],
        description="Present when input list items were dropped for a blank name",
    )


class EngagementResponse(BaseModel):
    model: Literal["engagement"] = "engagement"
    model_version: str = Field(examples=["20250101T120000Z"])
    interval_level: float = Field(default=0.8, description="Nominal coverage of the intervals")
    predictions: list[EngagementPrediction]
    explanation_methods: dict[str, Literal["shap", "occlusion"]] | None = Field(
        default=None,
        examples=[{"vote_count": "shap", "vote_average": "occlusion"}],
        description="With `explain=true`: how each output was explained",
    )
    dropped_items: int = Field(
        default=0, ge=0, description="Input list items dropped for a blank name, whole batch"
    )


class ModelSummary(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: ModelName
    status: Literal["serving", "unavailable"]
    active_version: str | None = None
    family: str | None = None
    created_at: str | None = None
    metrics: dict[str, Any] | None = None
    versions: list[str] = Field(default_factory=list, description="Versions on disk, oldest first")
    problem: str | None = Field(
        default=None,
        description="Why the model is unavailable, or why this process serves another "
        "version than the database names",
    )
    drift: DriftSummary | None = Field(
        default=None,
        description="The serving version's last drift check in this process (null until the "
        "first one; GET /v1/models/{name}/drift for the details)",
    )


class ModelList(BaseModel):
    models: list[ModelSummary]


class ActivationInfo(BaseModel):
    version: str = Field(examples=["20250101T120000Z"])
    activated_by: str = Field(examples=["key:1a2b3c4d5e6f"])
    activated_at: str
    source: str = Field(
        examples=["activate"],
        description="activate/reload: the admin API; training: `tmdb-analytics train`; "
        "seed: a first process's ACTIVE file",
    )


class ModelDetail(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: ModelName
    active_version: str = Field(description="The version this process serves")
    loaded_at: str
    fast_path: bool = Field(description="Small batches use the compiled scorer")
    versions: list[str]
    activation: ActivationInfo | None = Field(
        default=None,
        description="The active version recorded in the database (every process follows it "
        "within seconds), as this process last read it",
    )
    problem: str | None = Field(
        default=None, description="Why this process serves another version than the database"
    )
    card: ModelCard
    monitoring: dict[str, Any] = Field(
        description="Per version: requests, predictions, input feature and output summaries"
    )
    prediction_log: dict[str, Any] | None = Field(
        default=None,
        description="This process's prediction log writer: sample rate, predictions written, "
        "dropped (buffer full or stopped) and waiting, and whether writes are failing",
    )


class ActivateRequest(BaseModel):
    version: str = Field(pattern=r"^[0-9]{8}T[0-9]{6}Z(?:-[0-9]+)?$", examples=["20250101T120000Z"])


class ActivationResult(BaseModel):
    name: ModelName
    active_version: str
    previous_version: str | None
    mlflow: MlflowSync | None = Field(
        default=None, description="Whether MLflow's `champion` alias followed the switch"
    )
