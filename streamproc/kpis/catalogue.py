"""The KPI catalogue: every metric of the contract, declared once.

A KPI is one ``Kpi`` row: its name, the labels of its series, how its value is computed
from fact families (``Kind`` and ``reads``), which owner key exports it whole, its metric
topic and its help text. Everything else reads the rows: the split and whole samples
(``compute``), the partials' routing (a family goes to the owner of every KPI that reads
it), the Prometheus exposition, the metric topics, Redis, ``/kpis`` and ``docs/metrics.md``.

Adding a ratio, count, sum, mean or quantile over facts the engine already derives is one
row here. A KPI's labels must be labels of every family it reads (facts of a family with
more labels are added up), and its owner label one of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from streamproc.engine.facts import FAMILIES

__all__ = [
    "CATALOGUE",
    "FORECAST_FAMILIES",
    "GLOBAL",
    "KPIS",
    "MEASURE_FAMILIES",
    "QUANTILES",
    "SUMMARY_FAMILIES",
    "TARGET_KINDS",
    "Kind",
    "Kpi",
    "kpi",
    "owner_keys",
]

QUANTILES = (0.5, 0.9)
GLOBAL = "global"  # the owner of series that no label divides (one for the whole team)


class Kind(StrEnum):
    """How a KPI's value comes from the fact families it reads (``Kpi.reads``)."""

    COUNT = "count"
    """How many facts of ``reads[0]``: split (every worker exports its share)."""
    SUM = "sum"
    """The sum of the values of ``reads[0]``: split."""
    RATIO = "ratio"
    """Facts of ``reads[0]`` / facts of ``reads[1:]`` added up; not exported while 0."""
    MEAN = "mean"
    """The mean of the values of ``reads[0]``."""
    QUANTILES = "quantiles"
    """Quantiles (``QUANTILES``) of the values of ``reads[0]``, label ``quantile``."""
    DEADLINES_PASSED = "deadlines_passed"
    """Live: values (deadlines) of ``reads[0]`` passed by now, minus those of ``reads[1:]``
    passed: split."""
    OLDEST_AGE = "oldest_age"
    """Live: now minus the smallest value (a time) of ``reads[0]``; 0 for the label values
    of ``reads[1]`` (windowed: in any window, so in the periods kept) with none now."""
    PER_DISTINCT = "per_distinct"
    """The sum of the values of ``reads[0]`` / the distinct series of ``reads[1]``."""
    TARGET_RATIO = "target_ratio"
    """Live: facts of ``reads[0]`` today / the label's daily target (where one is set)."""
    SUM_PER_COUNT = "sum_per_count"
    """The sum of the values of ``reads[0]`` / the facts of ``reads[1]``; not exported while
    there are none."""
    SUM_DIFF = "sum_diff"
    """The sum of the values of ``reads[0]`` minus that of ``reads[1]``: split."""
    ATTACH = "attach"
    """Facts of ``reads[0]`` (labels a, b) / facts of ``reads[1]`` (one label, a's value)."""
    AT_START_RATIO = "at_start_ratio"
    """Facts of ``reads[0]`` in the window / the live count of ``reads[1]`` as it was at
    the window's start: now, minus ``reads[2]`` (entries) in the window, plus ``reads[0]``
    (exits) in the window."""
    TARGET = "target"
    """Live: each target in force (``ReadContext.period_targets``), labels measure, period
    and rep (none for the team); exported by the owner of the rep (the team: global)."""
    TARGET_ATTAINMENT = "target_attainment"
    """Live: a target's measure in the current period (``MEASURE_FAMILIES``) / the target."""
    FORECAST_COVERAGE = "forecast_coverage"
    """Live: (revenue won in the period + live weighted forecast) / the revenue target."""
    NPS = "nps"
    """% of the facts of ``reads[0]`` labelled ``category="promoter"`` minus % labelled
    ``detractor``, -100 to 100."""


_SPLIT = frozenset({Kind.COUNT, Kind.SUM, Kind.DEADLINES_PASSED, Kind.SUM_DIFF})
TARGET_KINDS = frozenset({Kind.TARGET, Kind.TARGET_ATTAINMENT, Kind.FORECAST_COVERAGE})
# target measure -> (the family of a rep's actual, of the team's, whether it is a sum)
MEASURE_FAMILIES = {
    "contact_attempts": ("attempt", "team_attempt", False),
    "leads_created": ("created", "team_created", False),
    "new_customers": ("won_new", "team_won_new", False),
    "deals_won": ("won", "won_src", False),
    "revenue_won": ("won_value", "won_value", True),
}
FORECAST_FAMILIES = ("forecast_value", "team_forecast")  # a rep's, the team's
_LIVE = frozenset({Kind.DEADLINES_PASSED, Kind.OLDEST_AGE, Kind.TARGET_RATIO})


@dataclass(frozen=True, slots=True)
class Kpi:
    """One metric of the catalogue."""

    name: str
    kind: Kind
    reads: tuple[str, ...]
    labels: tuple[str, ...]
    owner: str  # the label whose value names the owner key, or GLOBAL
    topic: str  # the metric topic family: sales.metrics.<topic>
    help: str
    windowed: bool = True
    total: bool = False  # also one series without its labels: the whole team

    @property
    def reads_by_labels(self) -> tuple[str, ...]:
        """The families read through the KPI's own labels (the others are read whole)."""
        if self.kind is Kind.ATTACH:
            return self.reads[:1]
        if self.kind is Kind.NPS:
            return ()
        return self.reads

    @property
    def split(self) -> bool:
        """Counts and sums: each worker exports its own partitions' share (``sum by``)."""
        return self.kind in _SPLIT

    @property
    def series_labels(self) -> tuple[str, ...]:
        """The labels of its series, ``quantile`` included (``window`` not)."""
        return (*self.labels, "quantile") if self.kind is Kind.QUANTILES else self.labels

    @property
    def needs_values(self) -> bool:
        return self.kind in (Kind.QUANTILES, Kind.DEADLINES_PASSED, Kind.OLDEST_AGE)

    def owner_key(self, labels: Mapping[str, str]) -> str:
        """The aggregation key whose owner exports this series whole (a series without its
        owner label, the team's, is the global owner's)."""
        if self.owner == GLOBAL or not labels.get(self.owner):
            return GLOBAL
        return f"{self.owner}:{labels[self.owner]}"


def _k(
    name: str,
    kind: Kind,
    reads: str,
    labels: str,
    owner: str,
    topic: str,
    help_: str,
    *,
    windowed: bool = True,
    total: bool = False,
) -> Kpi:
    return Kpi(
        name,
        kind,
        tuple(reads.split()),
        tuple(labels.split()),
        owner,
        topic,
        help_,
        windowed,
        total,
    )


_RT, _ACT, _PIPE, _EMAIL = "response-time", "activity", "pipeline", "email"
_CUST = "customers"
C, S, R, M, Q = Kind.COUNT, Kind.SUM, Kind.RATIO, Kind.MEAN, Kind.QUANTILES

_TARGET_READS = " ".join(
    sorted({f for rep, team, _ in MEASURE_FAMILIES.values() for f in (rep, team)})
    + list(FORECAST_FAMILIES)
)

CATALOGUE: tuple[Kpi, ...] = (
    # speed to lead
    _k("sales_leads_created", C, "created", "rep source", "rep", _RT, "Leads created"),
    _k(
        "sales_first_contacts",
        C,
        "first_contact",
        "rep",
        "rep",
        _RT,
        "Leads whose first contact attempt fell in the window",
    ),
    _k(
        "sales_response_time_seconds",
        Q,
        "first_contact",
        "rep",
        "rep",
        _RT,
        "Lead created to first contact attempt, quantiles",
    ),
    _k(
        "sales_response_time_avg_seconds",
        M,
        "first_contact",
        "rep",
        "rep",
        _RT,
        "Lead created to first contact attempt, mean",
    ),
    _k(
        "sales_responded_within_sla_ratio",
        R,
        "first_contact_in_sla first_contact",
        "rep",
        "rep",
        _RT,
        "Share of first contacts made within the SLA (on the alerts' clock)",
    ),
    _k(
        "sales_leads_awaiting_contact",
        C,
        "awaiting",
        "rep source",
        "rep",
        _RT,
        "Leads with no contact attempt yet",
        windowed=False,
    ),
    _k(
        "sales_leads_awaiting_contact_at_risk",
        Kind.DEADLINES_PASSED,
        "awaiting_risk awaiting_due",
        "rep",
        "rep",
        _RT,
        "Waiting leads past the at-risk share of their SLA, not past it",
        windowed=False,
    ),
    _k(
        "sales_leads_awaiting_contact_over_sla",
        Kind.DEADLINES_PASSED,
        "awaiting_due",
        "rep",
        "rep",
        _RT,
        "Waiting leads past their SLA",
        windowed=False,
    ),
    _k(
        "sales_oldest_awaiting_contact_seconds",
        Kind.OLDEST_AGE,
        # 0 when none: for the reps with a lead created in the periods kept (it waited)
        "awaiting_since created",
        "rep",
        "rep",
        _RT,
        "Age of the oldest lead still waiting for contact (0 for a rep with none waiting "
        "and a lead created in the periods kept)",
        windowed=False,
    ),
    # activity
    _k("sales_contact_attempts", C, "attempt", "rep channel", "rep", _ACT, "Contact attempts"),
    _k(
        "sales_contact_connects",
        C,
        "connect",
        "rep channel",
        "rep",
        _ACT,
        "Contact attempts that connected",
    ),
    _k(
        "sales_connect_ratio",
        R,
        "connect attempt",
        "rep channel",
        "rep",
        _ACT,
        "Connects / attempts",
    ),
    _k(
        "sales_target",
        Kind.TARGET,
        _TARGET_READS,
        "measure period rep",
        "rep",
        _ACT,
        "The target in force, from the topic sales.targets (the team's: no rep label); "
        "STREAMPROC_ACTIVITY_TARGETS: the default daily contact_attempts target of a rep",
        windowed=False,
    ),
    _k(
        "sales_target_attainment_ratio",
        Kind.TARGET_ATTAINMENT,
        _TARGET_READS,
        "measure period rep",
        "rep",
        _ACT,
        "The measure in the current period (day: today) / the target",
        windowed=False,
    ),
    _k(
        "sales_forecast_coverage_ratio",
        Kind.FORECAST_COVERAGE,
        _TARGET_READS,
        "period rep",
        "rep",
        _PIPE,
        "(Revenue won in the current period + live weighted forecast) / the revenue_won "
        "target of the period: is there enough pipeline to make quota",
        windowed=False,
    ),
    _k(
        "sales_activity_target_ratio",
        Kind.TARGET_RATIO,
        "attempt",
        "rep",
        "rep",
        _ACT,
        "Attempts today / the rep's daily target",
        windowed=False,
    ),
    # pipeline and deals
    _k(
        "sales_stage_entries",
        C,
        "stage_entry",
        "stage",
        "stage",
        _PIPE,
        "Deals that entered the stage",
    ),
    _k(
        "sales_stage_conversion_ratio",
        R,
        "stage_forward stage_exit",
        "stage",
        "stage",
        _PIPE,
        "Of the deals that left the stage, the share that moved forward",
    ),
    _k(
        "sales_stage_dwell_seconds",
        Q,
        "stage_exit",
        "stage",
        "stage",
        _PIPE,
        "Time spent in the stage by the deals that left it",
    ),
    _k("sales_deals_won", C, "won", "rep source", "rep", _PIPE, "Deals closed won"),
    _k("sales_revenue_won", S, "won_value", "rep", "rep", _PIPE, "Sum of deal_value of won deals"),
    _k("sales_deals_lost", C, "lost", "rep reason", "rep", _PIPE, "Deals closed lost"),
    _k(
        "sales_win_ratio",
        R,
        "won_src won_src lost_src",
        "source",
        "source",
        _PIPE,
        "Won / (won + lost) of the deals closed in the window, by lead source",
    ),
    _k(
        "sales_rep_win_ratio",
        R,
        "won won lost",
        "rep",
        "rep",
        _PIPE,
        "Won / (won + lost) of the deals the rep closed in the window",
    ),
    _k(
        "sales_channel_win_ratio",
        R,
        "won_ch won_ch lost_ch",
        "channel",
        "channel",
        _PIPE,
        "Won / (won + lost) of the deals closed in the window, by the channel of the lead's "
        "first connected contact attempt (none: never connected)",
    ),
    _k(
        "sales_new_customers",
        C,
        "won_new",
        "rep source",
        "rep",
        _PIPE,
        "Deals won from leads that were not existing customers",
    ),
    _k(
        "sales_stage_response_time_seconds",
        Q,
        "stage_response",
        "stage",
        "stage",
        _PIPE,
        "A deal entering the stage to the next rep activity on it (attempt or move to another "
        "stage), quantiles; at the activity's time",
    ),
    _k(
        "sales_stage_response_time_avg_seconds",
        M,
        "stage_response",
        "stage",
        "stage",
        _PIPE,
        "A deal entering the stage to the next rep activity on it, mean",
    ),
    _k(
        "sales_revenue_per_rep",
        Kind.PER_DISTINCT,
        "won_value active",
        "",
        GLOBAL,
        _PIPE,
        "Revenue won / reps with any event in the window",
    ),
    _k(
        "sales_upsell_ratio",
        R,
        "won_existing won_src",
        "",
        GLOBAL,
        _PIPE,
        "Share of deals won from existing customers",
    ),
    _k(
        "sales_open_pipeline_value",
        S,
        "pipeline_value",
        "rep stage",
        "rep",
        _PIPE,
        "Sum of deal_value over open deals",
        windowed=False,
    ),
    _k(
        "sales_forecast_value",
        S,
        "forecast_value",
        "rep",
        "rep",
        _PIPE,
        "Sum of deal_value x win probability over open deals",
        windowed=False,
    ),
    # email
    _k("sales_emails_sent", C, "email_sent", "rep", "rep", _EMAIL, "Emails sent"),
    _k(
        "sales_emails_opened",
        C,
        "email_opened",
        "rep",
        "rep",
        _EMAIL,
        "Of the emails sent in the window, those opened so far",
    ),
    _k(
        "sales_emails_clicked",
        C,
        "email_clicked",
        "rep",
        "rep",
        _EMAIL,
        "Of the emails sent in the window, those clicked so far",
    ),
    _k(
        "sales_email_open_ratio",
        R,
        "email_opened email_sent",
        "rep",
        "rep",
        _EMAIL,
        "Opened / sent",
    ),
    _k(
        "sales_email_click_ratio",
        R,
        "email_clicked email_sent",
        "rep",
        "rep",
        _EMAIL,
        "Clicked / sent",
    ),
    # business outcomes (spec/business-events.md): costs
    _k("sales_cost", S, "cost", "category source", "category", _CUST, "Costs recorded"),
    _k(
        "sales_cost_per_lead",
        Kind.SUM_PER_COUNT,
        "marketing_cost created",
        "source",
        GLOBAL,
        _CUST,
        "Marketing cost / leads created (without source: the whole team)",
        total=True,
    ),
    _k(
        "sales_cost_per_new_customer",
        Kind.SUM_PER_COUNT,
        # new customers as sales_new_customers counts them (periods-and-targets.md): deals
        # won from leads that were not existing customers, so not a customer's first win
        "marketing_cost won_new",
        "source",
        GLOBAL,
        _CUST,
        "Marketing cost / new customers won, the deals won from leads that were not "
        "existing customers (without source: the whole team)",
        total=True,
    ),
    # products
    _k(
        "sales_product_wins",
        C,
        "product_win",
        "product",
        "product",
        _CUST,
        "Won deals that included the product",
    ),
    _k(
        "sales_product_pair_wins",
        C,
        "product_pair",
        "product_a product_b",
        "product_a",
        _CUST,
        "Won deals that included both products (product_a < product_b)",
    ),
    _k(
        "sales_product_attach_ratio",
        Kind.ATTACH,
        "product_attach product_win",
        "product_a product_b",
        GLOBAL,
        _CUST,
        "Of the won deals that included product_a, the share that also included product_b",
    ),
    # customers
    _k(
        "sales_customers_active",
        C,
        "customer_active",
        "segment",
        "segment",
        _CUST,
        "Customers with a won deal and not churned since",
        windowed=False,
    ),
    _k(
        "sales_customers_churned",
        C,
        "churned",
        "segment reason",
        "segment",
        _CUST,
        "Churn events of known customers",
    ),
    _k(
        "sales_churn_ratio",
        Kind.AT_START_RATIO,
        "customer_lost customer_active customer_activated",
        "segment",
        "segment",
        _CUST,
        "Customers churned in the window / customers active at its start",
    ),
    _k(
        "sales_revenue_churned",
        S,
        "revenue_churned",
        "segment",
        "segment",
        _CUST,
        "Sum of revenue_lost of the churn events",
    ),
    _k(
        "sales_customer_revenue",
        S,
        "customer_revenue",
        "segment",
        "segment",
        _CUST,
        "Revenue won from the segment's customers",
    ),
    _k(
        "sales_customer_cost",
        S,
        "segment_cost",
        "segment",
        "segment",
        _CUST,
        "Costs with that segment or with a customer of it",
    ),
    _k(
        "sales_customer_profit",
        Kind.SUM_DIFF,
        "customer_revenue segment_cost",
        "segment",
        "segment",
        _CUST,
        "Revenue - cost of the segment: customer profitability",
    ),
    # NPS
    _k(
        "sales_nps_responses",
        C,
        "nps",
        "category",
        "category",
        _CUST,
        "NPS answers: promoter (9-10), passive (7-8), detractor (0-6)",
    ),
    _k(
        "sales_nps_score",
        Kind.NPS,
        "nps",
        "rep",
        GLOBAL,
        _CUST,
        "% promoters - % detractors, -100 to 100 (without rep: the whole team)",
        total=True,
    ),
)
KPIS: Mapping[str, Kpi] = {k.name: k for k in CATALOGUE}


def kpi(name: str) -> Kpi:
    return KPIS[name]


def _check(entry: Kpi) -> None:
    """A row that cannot be computed fails at import, naming itself."""
    if not entry.reads:
        raise ValueError(f"{entry.name}: reads no fact family")
    if entry.kind in TARGET_KINDS:  # labels of their own (measure, period, rep)
        unknown = [name for name in entry.reads if name not in FAMILIES]
        if unknown:
            raise ValueError(f"{entry.name}: unknown fact families {unknown}")
        return
    for i, name in enumerate(entry.reads):
        family = FAMILIES.get(name)
        if family is None:
            raise ValueError(f"{entry.name}: unknown fact family {name!r}")
        _check_labels(entry, name, family.labels)
        if entry.owner != GLOBAL and entry.owner not in family.labels:
            raise ValueError(f"{entry.name}: {name} has no owner label {entry.owner!r}")
        # a windowed row reads windowed facts, a live row live ones; but the live count an
        # at-start ratio starts from, the day's facts of a target ratio and the labels an
        # oldest age is 0 for
        live = not entry.windowed or (entry.kind is Kind.AT_START_RATIO and i == 1)
        live = live and not (entry.kind is Kind.OLDEST_AGE and i == 1)
        if family.live != live and entry.kind is not Kind.TARGET_RATIO:
            raise ValueError(f"{entry.name}: windowed and live facts do not mix ({name})")
    if entry.total and entry.owner != GLOBAL:
        raise ValueError(f"{entry.name}: a team-wide series needs the global owner")
    if entry.owner != GLOBAL and entry.owner not in entry.labels:
        raise ValueError(f"{entry.name}: owner {entry.owner!r} is not one of its labels")
    if entry.kind in _LIVE and entry.windowed:
        raise ValueError(f"{entry.name}: a {entry.kind} KPI is live, not windowed")


def _check_labels(entry: Kpi, name: str, labels: tuple[str, ...]) -> None:
    if name in entry.reads_by_labels:
        wanted = set(entry.labels)
    elif entry.kind is Kind.NPS:
        wanted = {*entry.labels, "category"}
    else:  # the denominator of an attach ratio: one label, the value of the KPI's first
        wanted = set()
        if len(labels) != 1:
            raise ValueError(f"{entry.name}: {name} must have one label")
    missing = wanted - set(labels)
    if missing:
        raise ValueError(f"{entry.name}: {name} has no label {sorted(missing)}")


for _entry in CATALOGUE:
    _check(_entry)


def _routes() -> dict[str, tuple[str, ...]]:
    """Family -> the owner kinds its partials go to: those of the KPIs that read it."""
    routes: dict[str, set[str]] = {}
    for entry in CATALOGUE:
        for family in entry.reads:
            owner = entry.owner
            if entry.kind in TARGET_KINDS and owner not in FAMILIES[family].labels:
                owner = GLOBAL  # a team total: the team's targets are the global owner's
            routes.setdefault(family, set()).add(owner)
    return {family: tuple(sorted(owners)) for family, owners in routes.items()}


ROUTES = _routes()
SUMMARY_FAMILIES = tuple(sorted(ROUTES))
# family -> (owner kind, position of the owner label in the family's labels; -1: global)
_OWNER_POSITIONS = {
    family: tuple(
        (owner, -1 if owner == GLOBAL else FAMILIES[family].labels.index(owner)) for owner in owners
    )
    for family, owners in ROUTES.items()
}


def owner_keys(family: str, labels: tuple[str, ...]) -> list[str]:
    """The owner keys a family's series feeds (its partials go to each of them)."""
    return [
        GLOBAL if pos < 0 else f"{owner}:{labels[pos]}"
        for owner, pos in _OWNER_POSITIONS.get(family, ())
    ]
