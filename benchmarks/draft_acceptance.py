r"""Model passes per string action on real robot data, for a model that predicts the recorded actions.

  python benchmarks/draft_acceptance.py --rlds_dir=../shared/data/oxe_samples/bridge_dataset/1.0.0 \
      --dataset=bridge --horizons=1,4 --proposal_lens=4,8,16

How many sequential passes speculative decoding saves depends on how often an action's digits repeat
the previous action's, a property of the data, not of the network. This replays the decoder's proposal
and verification rules (inference/decode.make_speculative_decoder; the same grammar tables) with an
oracle in place of the network: its greedy choice at each position is the recorded action's token.
Per step t of every episode: truth = the normalized action chunk at t as string tokens; draft = the
previous chunk shifted by one step (its unexecuted rest, last step repeated), the previous action for
H=1. Reported per (H, K): passes per action (prefill included) for constrained greedy decoding
(one pass per token), jump-forward only, and jump-forward + draft, the ratio to constrained, and the
share of drafted tokens accepted. Exactness of the real decoder is tested in tests/test_grammar.py.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags
import numpy as np

from genvla_jax.data import registry, rlds, stats as stats_lib
from genvla_jax.tokenizers import fast_actions, string_actions, text

FLAGS = flags.FLAGS
flags.DEFINE_string("rlds_dir", "../shared/data/oxe_samples/bridge_dataset/1.0.0", "TFDS RLDS directory")
flags.DEFINE_string("dataset", "bridge", "registry name (standardization, normalize mask)")
flags.DEFINE_string("splits", "train,val", "splits to read")
flags.DEFINE_string("tokenizer", "", "SentencePiece model (default: the demo tokenizer)")
flags.DEFINE_string("horizons", "1,4", "action chunk lengths")
flags.DEFINE_string("proposal_lens", "4,8,16", "tokens proposed per pass")
flags.DEFINE_integer("fast_vocab", 1024, "FAST BPE pieces (trained on the first 80% of episodes)")


def replay(grammar, truth, draft, proposal_len):
  """-> (passes incl. prefill, drafted, accepted) of speculative decoding whose model outputs `truth`
  (ids ending in EOS), proposing the grammar's forced tokens, else draft[index], per decode.py."""
  forced, forced_next = grammar.forced(), grammar.forced_next()
  column = {int(t): c for c, t in enumerate(grammar.token_ids)}
  eos = grammar.eos_id

  def advance(state, token):
    return grammar.next_state[state, column[token]] if token != eos else len(grammar.accepting) - 1

  state, passes, drafted, accepted = advance(0, truth[0]), 1, 0, 0  # the prefill chose truth[0]
  n = 1
  while truth[n - 1] != eos:
    passes += 1
    proposals, s = [], state
    for k in range(proposal_len):
      index = n + k
      if forced[s] >= 0:
        token, s, from_draft = int(forced[s]), int(forced_next[s]), False
      elif index < len(draft) and int(draft[index]) in column and grammar.next_state[s, column[int(draft[index])]] >= 0:
        token, from_draft = int(draft[index]), True
        s = grammar.next_state[s, column[token]]
      else:
        break
      proposals.append((token, from_draft))
      if token == eos:
        break
    kept = 0
    for token, _ in proposals:
      if n + kept < len(truth) and token == truth[n + kept]:
        kept += 1
      else:
        break
    drafted += sum(d for _, d in proposals)
    accepted += sum(d for _, d in proposals[:kept])
    for token in truth[n : n + kept]:
      state = advance(state, token)
    n += kept
    if truth[n - 1] == eos:
      break
    state = advance(state, truth[n])  # the model's own choice after the kept proposals
    n += 1
  return passes, drafted, accepted


def episodes(rlds_dir, dataset, splits):
  spec = registry.get(dataset)
  out = []
  for split in splits:
    for episode in rlds.RLDSDataset(rlds_dir, split):
      out.append(np.stack([spec.standardize(step)["action"] for step in episode["steps"]]))
  return out, spec


def main(argv):
  del argv
  path = FLAGS.tokenizer
  if not path:
    from genvla_jax.data import demo

    path = demo.ensure(os.path.expanduser("~/.cache/genvla_jax/demo_v7")).tokenizer
  tokenizer = text.TextTokenizer(path)
  eps, spec = episodes(FLAGS.rlds_dir, FLAGS.dataset, FLAGS.splits.split(","))
  statistics = stats_lib.describe(np.concatenate(eps), spec.normalize_mask)
  normalized = [np.clip(stats_lib.normalize(e, statistics), -1, 1) for e in eps]
  dim = normalized[0].shape[1]
  print(f"{FLAGS.dataset}: {len(eps)} episodes, {sum(len(e) for e in eps)} steps, {dim}-D actions")
  print(
    f"{'H':>2} {'K':>3} {'constrained':>11} {'jump-forward':>12} {'jf + draft':>10} {'jf ratio':>8} "
    f"{'jf+draft ratio':>14} {'accepted':>8}"
  )
  horizons = [int(h) for h in FLAGS.horizons.split(",")]
  for horizon in horizons:
    tok = string_actions.StringActionTokenizer(tokenizer, horizon, dim)
    grammar = tok.grammar()
    chunks = []  # (truth ids, draft ids) per step with a previous step in the same episode
    for e in normalized:
      padded = np.concatenate([e, np.repeat(e[-1:], horizon, axis=0)])
      ids = [tok.encode(padded[t : t + horizon])[0] + [tokenizer.eos_id] for t in range(len(e))]
      previous = [
        np.concatenate([padded[t - 1 : t - 1 + horizon][1:], padded[t - 1 + horizon - 1 : t - 1 + horizon]])
        for t in range(1, len(e))
      ]
      chunks += [(ids[t], tok.encode(previous[t - 1])[0] + [tokenizer.eos_id]) for t in range(1, len(e))]
    for k in [int(x) for x in FLAGS.proposal_lens.split(",")]:
      plain = np.mean([len(truth) + 1 for truth, _ in chunks])
      jump = np.mean([replay(grammar, truth, [], k)[0] for truth, _ in chunks])
      results = [replay(grammar, truth, draft, k) for truth, draft in chunks]
      spec_passes = np.mean([r[0] for r in results])
      acceptance = sum(r[2] for r in results) / max(sum(r[1] for r in results), 1)
      print(
        f"{horizon:>2} {k:>3} {plain:11.1f} {jump:12.1f} {spec_passes:10.1f} {jump / plain:8.2f} "
        f"{spec_passes / plain:14.2f} {acceptance:8.2f}",
        flush=True,
      )
  tokens_per_chunk(normalized, tokenizer, horizons, FLAGS.fast_vocab)


def tokens_per_chunk(normalized, tokenizer, horizons, fast_vocab):
  """Mean action tokens (EOS excluded) per chunk on the last 20% of episodes, for the three tokenizers;
  FAST's BPE is trained on the first 80%."""
  import tempfile

  split = int(0.8 * len(normalized))
  dim = normalized[0].shape[1]
  print(f"\ntokens per action chunk (held-out episodes {len(normalized) - split}; FAST BPE {fast_vocab} pieces):")
  print(f"{'H':>2} {'bins':>6} {'string':>7} {'fast':>6} {'fast max err':>12}")

  def chunks(eps, horizon):
    out = []
    for e in eps:
      padded = np.concatenate([e, np.repeat(e[-1:], horizon, axis=0)])
      out += [padded[t : t + horizon] for t in range(len(e))]
    return np.stack(out)

  for horizon in horizons:
    path = os.path.join(tempfile.mkdtemp(), "fast.model")
    fast_actions.train_bpe(chunks(normalized[:split], horizon), path, horizon, vocab_size=fast_vocab)
    fast = fast_actions.FastActionTokenizer(path, horizon, dim, tokenizer.vocab_size, tokenizer.eos_id)
    strings = string_actions.StringActionTokenizer(tokenizer, horizon, dim)
    held_out = chunks(normalized[split:], horizon)
    fast_ids = [fast.encode(c)[0] for c in held_out]
    decoded = [fast.decode(ids) for ids in fast_ids]
    assert all(valid.all() for _, valid in decoded)
    error = max(np.abs(a - c).max() for (a, _), c in zip(decoded, held_out))
    print(
      f"{horizon:>2} {horizon * dim:6d} {np.mean([len(strings.encode(c)[0]) for c in held_out]):7.1f} "
      f"{np.mean([len(i) for i in fast_ids]):6.1f} {error:12.4f}",
      flush=True,
    )


if __name__ == "__main__":
  app.run(main)
