"""Contribution credits as deterministic, replayable contracts (framework-free).

A contract is a set of named, versioned credit rules composed with weights over a round
budget of integer tokens (`Contracts`). The server records the contracts' identity in the
run entry and each round's awards as `credit` entries in the round's batch; anyone
holding the log replays them (`replay_credits`).
"""

from .contract import BUILTIN_RULES, Contracts
from .facts import Contribution, Refusal, RefusalHistory, RoundArrays, RoundFacts, round_facts
from .quality import Quality, Validation, exact_shapley, gtg_shapley, leave_one_out
from .replay import CreditReplay, Difference, awards, balances, replay_credits
from .rounding import largest_remainder
from .rules import DEFAULT_FACTORS, Penalties, Quantity, Rule, Score, Timeliness

__all__ = [
    "BUILTIN_RULES", "DEFAULT_FACTORS", "Contracts", "Contribution", "CreditReplay",
    "Difference", "Penalties", "Quality", "Quantity", "Refusal", "RefusalHistory",
    "RoundArrays", "RoundFacts", "Rule", "Score", "Timeliness", "Validation", "awards",
    "balances", "exact_shapley", "gtg_shapley", "largest_remainder", "leave_one_out",
    "replay_credits", "round_facts",
]
