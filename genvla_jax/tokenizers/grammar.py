"""Token-level automata that make action decoding valid by construction.

A `TokenGrammar` is a deterministic automaton over the tokenizer's ids:
  token_ids  [C] int32      the candidate tokens (all others are never allowed)
  next_state [S, C] int32   state after emitting candidate c in state s; -1: not allowed
  accepting  [S] bool       EOS allowed (the text so far is a complete action chunk)
Decoding starts in state 0; `select` masks the logits to the allowed tokens (and EOS where accepting),
so greedy or sampled decoding can only write strings the action parser accepts in full.

String actions (tokenizers/string_actions.py): the character language is the fixed-width template
`[+-][01].dddd` per value (after a leading 1 only zeros: the value stays in [-1, 1]), values joined by
" ", steps by " | ". `char_automaton` builds it; `string_action_grammar` lifts it to tokens by running
every candidate piece's characters through it from every state (a piece is a candidate if all its
characters are in the template's alphabet; SentencePiece's "▁" is a space; control and byte pieces are
excluded). Any tokenization of a valid string is accepted, including the canonical one the model
was trained on. Bins: exactly H*D ids from the bin block, then EOS.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

SIGNS, DIGITS = "+-", "0123456789"
STEP_SEP, DIM_SEP = " | ", " "  # the string action format's separators (string_actions.py writes with these)


@dataclasses.dataclass(frozen=True)
class TokenGrammar:
  token_ids: np.ndarray  # [C]
  next_state: np.ndarray  # [S, C]
  accepting: np.ndarray  # [S]
  eos_id: int

  def arrays(self) -> dict:
    """Device arrays for the jitted decoder."""
    return {
      "token_ids": jnp.asarray(self.token_ids, jnp.int32),
      "next_state": jnp.asarray(self.next_state, jnp.int32),
      "accepting": jnp.asarray(self.accepting, bool),
    }

  def forced(self) -> np.ndarray:
    """[S] the one token a state allows (EOS included), or -1 where the model has a choice."""
    allowed = self.next_state >= 0
    count = allowed.sum(1) + self.accepting
    only = self.token_ids[np.argmax(allowed, axis=1)]
    return np.where(count == 1, np.where(self.accepting, self.eos_id, only), -1)

  def forced_next(self) -> np.ndarray:
    """[S] the state after a state's forced token (the dead state after a forced EOS; itself if none)."""
    forced = self.forced()
    dead = len(self.accepting) - 1
    out = np.arange(len(forced))
    for s, token in enumerate(forced):
      if token == self.eos_id:
        out[s] = dead
      elif token >= 0:
        out[s] = self.next_state[s, int(np.flatnonzero(self.token_ids == token)[0])]
    return out

  def accepts(self, ids) -> bool:
    """Whether the id sequence (ending in EOS) is in the language."""
    column = {int(t): c for c, t in enumerate(self.token_ids)}
    state = 0
    for i in ids:
      if int(i) == self.eos_id:
        return bool(self.accepting[state])
      if int(i) not in column or self.next_state[state, column[int(i)]] < 0:
        return False
      state = self.next_state[state, column[int(i)]]
    return False


def char_automaton(horizon: int, dim: int, decimals: int) -> tuple[list[dict[str, int]], int]:
  """-> (transitions: per state {char: next state}, accepting state) of the string action format."""
  transitions: list[dict[str, int]] = []

  def new():
    transitions.append({})
    return len(transitions) - 1

  state = new()  # the start
  for h in range(horizon):
    for d in range(dim):
      if h or d:
        sep = STEP_SEP if d == 0 else DIM_SEP
        for ch in sep:
          nxt = new()
          transitions[state][ch] = nxt
          state = nxt
      after_sign = new()
      for ch in SIGNS:
        transitions[state][ch] = after_sign
      # integer digit 0 -> any decimals; 1 -> only zeros (|value| <= 1)
      free, zero = new(), new()
      transitions[after_sign]["0"], transitions[after_sign]["1"] = free, zero
      free_dot, zero_dot = new(), new()
      transitions[free]["."], transitions[zero]["."] = free_dot, zero_dot
      end = new()
      for k in range(decimals):
        last = k == decimals - 1
        free_next = end if last else new()
        zero_next = end if last else new()
        for ch in DIGITS:
          transitions[free_dot][ch] = free_next
        transitions[zero_dot]["0"] = zero_next
        free_dot, zero_dot = free_next, zero_next
      state = end
  return transitions, state


def _piece_text(piece: str) -> str:
  return piece.replace("\u2581", " ")


def lift_to_tokens(transitions, accepting_state: int, pieces: dict[int, str], eos_id: int) -> TokenGrammar:
  """Character automaton + {token id: text} -> TokenGrammar (candidates: pieces over the alphabet)."""
  alphabet = set().union(*[set(t) for t in transitions])
  candidates = sorted(i for i, text in pieces.items() if text and set(text) <= alphabet)
  next_state = np.full((len(transitions) + 1, len(candidates)), -1, np.int32)  # last row: after EOS
  for s in range(len(transitions)):
    for c, token in enumerate(candidates):
      state = s
      for ch in pieces[token]:
        state = transitions[state].get(ch, -1)
        if state < 0:
          break
      next_state[s, c] = state
  accepting = np.zeros(len(transitions) + 1, bool)
  accepting[accepting_state] = True
  grammar = TokenGrammar(np.asarray(candidates, np.int32), next_state, accepting, eos_id)
  _check_complete(grammar, pieces)
  for s, moves in enumerate(transitions):  # every character the format allows must be writable
    firsts = {pieces[int(t)][0] for t, n in zip(grammar.token_ids, next_state[s]) if n >= 0}
    if set(moves) - firsts:
      raise ValueError(
        f"the tokenizer's vocabulary cannot write the action format: no token starts "
        f"with {sorted(set(moves) - firsts)} where the format allows it (state {s})"
      )
  return grammar


def _check_complete(grammar: TokenGrammar, pieces):
  """Every state reachable from the start must be able to reach acceptance, else the vocabulary cannot
  write the format (e.g. a digit with no token of its own)."""
  reach = {0}
  frontier = [0]
  while frontier:
    s = frontier.pop()
    for t in grammar.next_state[s]:
      if t >= 0 and t not in reach:
        reach.add(int(t))
        frontier.append(int(t))
  good = set(np.flatnonzero(grammar.accepting))
  changed = True
  while changed:
    changed = False
    for s in range(len(grammar.accepting)):
      if s not in good and any(t in good for t in grammar.next_state[s] if t >= 0):
        good.add(s)
        changed = True
  stuck = sorted(reach - good)
  if stuck or 0 not in good:
    raise ValueError(
      f"the tokenizer's vocabulary cannot write the action format: states {stuck[:5]} "
      f"have no way to finish ({len(grammar.token_ids)} candidate pieces: "
      f"{[pieces[int(t)] for t in grammar.token_ids][:20]})"
    )


def string_action_grammar(text_tokenizer, horizon: int, dim: int, decimals: int) -> TokenGrammar:
  """The string action format over a SentencePiece tokenizer's vocabulary (text.TextTokenizer)."""
  sp = text_tokenizer.sp
  pieces = {
    i: _piece_text(sp.id_to_piece(i))
    for i in range(sp.get_piece_size())
    if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i))
  }
  transitions, accept = char_automaton(horizon, dim, decimals)
  return lift_to_tokens(transitions, accept, pieces, text_tokenizer.eos_id)


def bin_action_grammar(first_id: int, num_bins: int, length: int, eos_id: int) -> TokenGrammar:
  """Exactly `length` ids from [first_id, first_id + num_bins), then EOS."""
  ids = np.arange(first_id, first_id + num_bins, dtype=np.int32)
  next_state = np.full((length + 2, num_bins), -1, np.int32)
  next_state[:length] = np.arange(1, length + 1)[:, None]
  accepting = np.zeros(length + 2, bool)
  accepting[length] = True
  return TokenGrammar(ids, next_state, accepting, eos_id)


def select(grammar: dict, eos_id: int, logits, state, rng=None, temperature: float = 0.0):
  """logits [B,V] float32, state [B] -> (token [B] int32, next state [B]). Greedy when rng is None,
  else sampled at `temperature` among the allowed tokens only. EOS moves to the final (dead) state."""
  allowed = grammar["next_state"][state]  # [B,C]
  candidate_logits = jnp.where(allowed >= 0, logits[:, grammar["token_ids"]], -jnp.inf)
  eos_logit = jnp.where(grammar["accepting"][state], logits[:, eos_id], -jnp.inf)
  scores = jnp.concatenate([candidate_logits, eos_logit[:, None]], axis=1)  # [B,C+1]
  if rng is None:
    choice = jnp.argmax(scores, axis=1)
  else:
    choice = jax.random.categorical(rng, scores / temperature, axis=1)
  is_eos = choice == scores.shape[1] - 1
  column = jnp.minimum(choice, scores.shape[1] - 2)
  token = jnp.where(is_eos, eos_id, grammar["token_ids"][column])
  dead = grammar["next_state"].shape[0] - 1
  new_state = jnp.where(is_eos, dead, jnp.take_along_axis(allowed, column[:, None], axis=1)[:, 0])
  return token.astype(jnp.int32), new_state
