"""dm-acme 0.4.0's n-step transition adder, storing the full bootstrap discount.

The oracle for wpo_agent.nstep_writer: the same items, written through acme's
generic (and several times slower) adder. Identical to acme's
NStepTransitionAdder except that the stored discount is g^k d_t...d_{t+k-1}
instead of acme's g^(k-1) d_t...d_{t+k-1} (see wpo_agent/replay.py).
"""

from acme.adders import reverb as acme_reverb
import tree


class BootstrapNStepTransitionAdder(acme_reverb.NStepTransitionAdder):
  """acme's n-step transition adder with the full bootstrap discount."""

  def _compute_cumulative_quantities(self, rewards, discounts):
    n_step_return, total_discount = super()._compute_cumulative_quantities(
        rewards, discounts)
    # self._discount is a float32 scalar, so dtypes (float32) are unchanged.
    gamma = self._discount
    return n_step_return, tree.map_structure(lambda d: d * gamma,
                                             total_discount)


def make_adder(client, *, table: str, n_step: int, discount: float
              ) -> BootstrapNStepTransitionAdder:
  return BootstrapNStepTransitionAdder(
      client=client, n_step=n_step, discount=discount,
      priority_fns={table: None})
