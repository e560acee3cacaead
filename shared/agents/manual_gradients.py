"""Hand-derived gradients and NumPy acting for the MLP agents of classic control (PPO and DQN).

On classic-control sizes (a few thousand parameters, minibatches of tens of samples) an update
spends most of its time in autograd's per-operation bookkeeping, not in the arithmetic.
:class:`MLPPPOGradients` computes the same loss as :func:`shared.agents.ppo.ppo_loss`, and
:class:`MLPDQNGradients` the same TD loss as DQN, and each writes the exact gradient straight into
the parameters' ``.grad`` tensors with a few matrix products per layer: the chain rule written out
once for MLPs with tanh, ReLU or ELU activations.

They apply to MLPs on flat observations (the flatten encoder): PPO's actor-critic with
categorical or diagonal Gaussian actions, and DQN's Q-network without the dueling head. Every
other network uses autograd. ``tests/shared/test_manual_gradients.py`` checks gradients and loss
values against autograd for each supported combination.

When acting, the same networks run in NumPy (:class:`NumpySampler`, :class:`NumpyGreedy`) on
views that share memory with the torch parameters: a NumPy call on arrays this small costs about
a microsecond, a torch call several.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from shared.agents.policies import ActorCritic

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class LossSettings:
    """The coefficients of the PPO objective (see ``PPOConfig``)."""

    clip_coef: float
    clip_vloss: bool
    ent_coef: float
    vf_coef: float


def supports(policy: ActorCritic) -> bool:
    """Return whether :class:`MLPPPOGradients` can differentiate this policy's loss by hand."""
    return not policy.shared_encoder and policy.actor.activation_name in _BACKWARDS and policy.critic.activation_name in _BACKWARDS


# Each takes d(loss)/d(activation) and returns d(loss)/d(pre-activation), in place where it can.


def _tanh_backward(grad: torch.Tensor, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    return grad.addcmul_(grad * post, post, value=-1.0)  # grad * (1 - tanh^2)


def _relu_backward(grad: torch.Tensor, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    return grad.masked_fill_(pre <= 0, 0.0)


def _elu_backward(grad: torch.Tensor, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    return torch.where(pre > 0, grad, grad * (post + 1.0))


_BACKWARDS = {"tanh": _tanh_backward, "relu": _relu_backward, "elu": _elu_backward}


Saved = list[tuple[torch.Tensor, torch.Tensor]]


class MLPTower:
    """One :class:`shared.networks.MLP`: its forward pass keeping activations, and its backward pass into ``.grad``."""

    def __init__(self, mlp: torch.nn.Module):
        self.layers = mlp.linears
        self.activation = mlp.activation
        self.activation_backward = _BACKWARDS[mlp.activation_name]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Saved]:
        """Return the output and, per hidden layer, (pre-activation, activation)."""
        saved: Saved = []
        for layer in self.layers[:-1]:
            pre = torch.addmm(layer.bias, x, layer.weight.t())
            x = self.activation(pre)
            saved.append((pre, x))
        output = self.layers[-1]
        return torch.addmm(output.bias, x, output.weight.t()), saved

    def backward(self, x: torch.Tensor, saved: Saved, grad: torch.Tensor) -> None:
        """Write d(loss)/d(weights) into each layer's ``.grad``, given d(loss)/d(output); ``x`` is the forward input."""
        inputs = [x] + [post for _, post in saved]
        for index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[index]
            torch.mm(grad.t(), inputs[index], out=layer.weight.grad)
            torch.sum(grad, dim=0, out=layer.bias.grad)
            if index > 0:
                pre, post = saved[index - 1]
                grad = self.activation_backward(torch.mm(grad, layer.weight), pre, post)


class _SeparateTowers:
    """Actor and critic MLPs evaluated one after the other: the general case."""

    def __init__(self, actor: torch.nn.Module, critic: torch.nn.Module):
        self.actor, self.critic = MLPTower(actor), MLPTower(critic)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[Saved]]:
        """Return the actor output, the critic output and each tower's saved activations."""
        actor_out, actor_saved = self.actor.forward(x)
        critic_out, critic_saved = self.critic.forward(x)
        return actor_out, critic_out, [actor_saved, critic_saved]

    def backward(self, x: torch.Tensor, saved: list[Saved], grad_actor: torch.Tensor, grad_critic: torch.Tensor) -> None:
        """Write d(loss)/d(weights) into both towers' ``.grad``, given d(loss)/d(output) of each."""
        self.actor.backward(x, saved[0], grad_actor)
        self.critic.backward(x, saved[1], grad_critic)


def twin_parameter_order(policy: ActorCritic) -> list[torch.nn.Parameter]:
    """Return the policy's parameters with each hidden layer's actor and critic tensors side by side.

    Create the policy's :class:`shared.optim.FlatAdam` in this order and the two towers' hidden
    layers sit next to each other in its flat buffer, so :class:`_TwinTowers` can evaluate both
    with one batched product per layer.
    """
    actor, critic = policy.actor.linears, policy.critic.linears
    order: list[torch.nn.Parameter] = []
    if len(actor) == len(critic):
        for actor_layer, critic_layer in zip(actor[:-1], critic[:-1]):
            order += [actor_layer.weight, critic_layer.weight, actor_layer.bias, critic_layer.bias]
    seen = {id(p) for p in order}
    return order + [p for p in policy.parameters() if id(p) not in seen]


def _joined(first: torch.Tensor, second: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor | None:
    """Return a view of two equal-shaped tensors stored back to back, as one tensor of ``shape``; None if they are not."""
    if first.shape != second.shape or not (first.is_contiguous() and second.is_contiguous()):
        return None
    if first.untyped_storage().data_ptr() != second.untyped_storage().data_ptr() or second.storage_offset() != first.storage_offset() + first.numel():
        return None
    return torch.as_strided(first.detach(), shape, torch.empty(shape, device="meta").stride(), first.storage_offset())


class _TwinTowers:
    """Actor and critic MLPs of equal hidden sizes evaluated together, one batched product per layer.

    The hidden layers' weights are read as stacked views ``(2, out, in)`` over the optimiser's
    flat buffer (see :func:`twin_parameter_order`), and so are their gradients.
    """

    def __init__(self, actor: torch.nn.Module, critic: torch.nn.Module, layers: list[tuple[torch.Tensor, ...]]):
        self.layers = layers  # per hidden layer: (weight, bias, weight grad, bias grad), stacked
        self.heads = (actor.linears[-1], critic.linears[-1])
        self.activation = actor.activation
        self.activation_backward = _BACKWARDS[actor.activation_name]

    @classmethod
    def build(cls, actor: torch.nn.Module, critic: torch.nn.Module) -> "_TwinTowers | None":
        """Return twin towers when both MLPs have the same hidden layers stored side by side, else None."""
        if actor.activation_name != critic.activation_name or len(actor.linears) != len(critic.linears) or len(actor.linears) < 2:
            return None
        layers = []
        for index, (a, c) in enumerate(zip(actor.linears[:-1], critic.linears[:-1])):
            out_dim, in_dim = a.weight.shape
            weight_shape = (2 * out_dim, in_dim) if index == 0 else (2, out_dim, in_dim)
            views = (
                _joined(a.weight, c.weight, weight_shape),
                _joined(a.bias, c.bias, (2, out_dim)),
                _joined(a.weight.grad, c.weight.grad, weight_shape) if a.weight.grad is not None and c.weight.grad is not None else None,
                _joined(a.bias.grad, c.bias.grad, (2, out_dim)) if a.bias.grad is not None and c.bias.grad is not None else None,
            )
            if any(view is None for view in views):
                return None
            layers.append(views)
        return cls(actor, critic, layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Saved]:
        """Return the actor output, the critic output and per hidden layer (pre-activation, activation), shaped (2, N, width)."""
        count = x.shape[0]
        saved: Saved = []
        weight, bias = self.layers[0][:2]
        pre = torch.addmm(bias.view(-1), x, weight.t()).view(count, 2, -1).transpose(0, 1)
        h = self.activation(pre)
        saved.append((pre, h))
        for weight, bias, _, _ in self.layers[1:]:
            pre = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            h = self.activation(pre)
            saved.append((pre, h))
        actor_head, critic_head = self.heads
        actor_out = torch.addmm(actor_head.bias, h[0], actor_head.weight.t())
        critic_out = torch.addmm(critic_head.bias, h[1], critic_head.weight.t())
        return actor_out, critic_out, saved

    def backward(self, x: torch.Tensor, saved: Saved, grad_actor: torch.Tensor, grad_critic: torch.Tensor) -> None:
        """Write d(loss)/d(weights) into the ``.grad`` of both towers, given d(loss)/d(output) of each."""
        last = saved[-1][1]
        grad = torch.empty(last.shape, dtype=last.dtype, device=last.device)
        for side, (head, head_grad) in enumerate(zip(self.heads, (grad_actor, grad_critic))):
            torch.mm(head_grad.t(), last[side], out=head.weight.grad)
            torch.sum(head_grad, dim=0, out=head.bias.grad)
            torch.mm(head_grad, head.weight, out=grad[side])
        for index in range(len(self.layers) - 1, -1, -1):
            pre, post = saved[index]
            grad = self.activation_backward(grad, pre, post)
            _, _, weight_grad, bias_grad = self.layers[index]
            torch.sum(grad, dim=1, out=bias_grad)
            if index == 0:
                torch.bmm(grad.transpose(1, 2), x.expand(2, *x.shape), out=weight_grad.view(2, -1, x.shape[1]))
            else:
                inputs = saved[index - 1][1]
                torch.bmm(grad.transpose(1, 2), inputs, out=weight_grad)
                grad = torch.bmm(grad, self.layers[index][0])


class MLPPPOGradients:
    """The PPO loss of an MLP :class:`ActorCritic` and its gradient, without autograd.

    The gradients are written into ``.grad`` of the policy's parameters (allocated here if
    missing), replacing what was there, so no ``zero_grad`` is needed before :meth:`loss_and_grad`.
    """

    def __init__(self, policy: ActorCritic, settings: LossSettings):
        if not supports(policy):
            raise ValueError("MLPPPOGradients needs an ActorCritic with the flatten encoder and tanh, relu or elu MLPs")
        self.policy = policy
        self.settings = settings
        for parameter in policy.parameters():
            if parameter.requires_grad and parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        self.towers: _TwinTowers | _SeparateTowers = _TwinTowers.build(policy.actor, policy.critic) or _SeparateTowers(policy.actor, policy.critic)

    def inputs(self, obs: torch.Tensor) -> torch.Tensor:
        """Return the MLP input: observations normalised (when enabled) and flattened, as ``ActorCritic.features`` does."""
        if obs.dtype == torch.float32 and obs.dim() == 2 and not self.policy.normalizer.enabled:
            return obs
        return self.policy.normalizer(obs.float()).reshape(obs.shape[0], -1)

    @torch.inference_mode()
    def loss_and_grad(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        old_log_probs: torch.Tensor,
        advantages: torch.Tensor,
        old_values: torch.Tensor,
        returns: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Set the parameters' gradients of the PPO loss on one minibatch; return the loss parts.

        The parts are those of ``ppo_loss``: policy_loss, value_loss, entropy, approx_kl, clipfrac.
        ``advantages`` are used as given (normalise them before the call, as PPO does).
        """
        settings = self.settings
        policy = self.policy
        count = obs.shape[0]
        x = self.inputs(obs)

        # Forward: actor output (logits or Gaussian mean) and value, keeping each layer's activations.
        actor_out, value_out, saved = self.towers.forward(x)
        values = value_out.squeeze(-1)

        # Log-probability and entropy of the taken actions, with their derivatives for later.
        if policy.continuous:
            log_std = policy.actor_log_std
            inv_std = torch.exp(-log_std)
            z = (actions - actor_out) * inv_std
            new_log_probs = (-0.5 * z * z - log_std - _HALF_LOG_2PI).sum(-1)
            entropy = (0.5 + _HALF_LOG_2PI + log_std).sum(-1).expand(count)
        else:
            log_softmax = torch.log_softmax(actor_out, dim=-1)
            probs = log_softmax.exp()
            taken = F.one_hot(actions.long(), actor_out.shape[-1]).to(actor_out.dtype)
            new_log_probs = (log_softmax * taken).sum(-1)
            entropy = -(probs * log_softmax).sum(-1)

        # Clipped surrogate: d(policy_loss)/d(log pi) = d/d(ratio) * ratio. torch.max sends the
        # gradient to the larger branch. The branches are equal inside [1-c, 1+c]; outside it the
        # clipped branch is constant, so the gradient flows exactly where unclipped >= clipped.
        log_ratio = new_log_probs - old_log_probs
        ratio = log_ratio.exp()
        negative_advantages = -advantages
        unclipped_loss = negative_advantages * ratio
        clipped_loss = negative_advantages * torch.clamp(ratio, 1 - settings.clip_coef, 1 + settings.clip_coef)
        policy_loss = torch.maximum(unclipped_loss, clipped_loss).mean()
        grad_log_prob = unclipped_loss.mul(unclipped_loss >= clipped_loss).mul_(1.0 / count)

        # Value loss, clipped around the rollout's values or plain, scaled by vf_coef.
        error = values - returns
        if settings.clip_vloss:
            delta = values - old_values
            clipped_error = old_values + torch.clamp(delta, -settings.clip_coef, settings.clip_coef) - returns
            unclipped_sq, clipped_sq = error * error, clipped_error * clipped_error
            value_loss = torch.maximum(unclipped_sq, clipped_sq).mean().mul_(0.5)
            # Inside the clip range both branches equal the plain error (up to rounding); outside
            # it the clipped branch does not depend on the new value.
            passes = (unclipped_sq >= clipped_sq) | (delta.abs() <= settings.clip_coef)
            grad_values = error.mul(passes)
        else:
            value_loss = (error * error).mean().mul_(0.5)
            grad_values = error.clone()
        grad_values.mul_(settings.vf_coef / count)

        # Back through the heads: d(loss)/d(actor output) from the policy loss and the entropy bonus.
        if policy.continuous:
            grad_actor_out = grad_log_prob.unsqueeze(-1) * z * inv_std
            grad_log_std = (grad_log_prob.unsqueeze(-1) * (z * z - 1.0)).sum(0, keepdim=True)
            if settings.ent_coef != 0.0:
                grad_log_std -= settings.ent_coef
            policy.actor_log_std.grad.copy_(grad_log_std)
        else:
            grad_actor_out = (taken - probs) * grad_log_prob.unsqueeze(-1)
            if settings.ent_coef != 0.0:
                # dH/d(logits) = -p (log p + H); the loss subtracts ent_coef * mean(H).
                grad_actor_out += (settings.ent_coef / count) * probs * (log_softmax + entropy.unsqueeze(-1))

        # Back through both MLPs into the parameters' .grad.
        self.towers.backward(x, saved, grad_actor_out, grad_values.unsqueeze(-1))

        ratio_change = ratio - 1.0
        return {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy.mean(),
            "approx_kl": (ratio_change - log_ratio).mean(),
            "clipfrac": (ratio_change.abs() > settings.clip_coef).float().mean(),
        }


_NUMPY_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0, out=x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
}


class NumpySampler:
    """The policy's forward pass and action sampling in NumPy, for rollouts on CPU.

    Build one per rollout (:meth:`build`): its arrays are views of the parameters' current storage.
    Sampling draws from ``rng``, a NumPy generator the agent owns and checkpoints.
    """

    def __init__(self, policy: ActorCritic, rng: np.random.Generator):
        self.towers = [
            ([(layer.weight.detach().numpy().T, layer.bias.detach().numpy()) for layer in mlp.linears], _NUMPY_ACTIVATIONS[mlp.activation_name])
            for mlp in (policy.actor, policy.critic)
        ]
        self.continuous = policy.continuous
        self.log_std = policy.actor_log_std.detach().numpy()[0] if policy.continuous else None
        self.rng = rng

    @classmethod
    def build(cls, policy: ActorCritic, rng: np.random.Generator) -> "NumpySampler | None":
        """Return a sampler, or None where NumPy cannot run this policy (parameters off the CPU, observation normalisation)."""
        if policy.normalizer.enabled or any(p.device.type != "cpu" or p.dtype != torch.float32 for p in policy.parameters()):
            return None
        return cls(policy, rng)

    def sample(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return sampled actions, their log-probabilities and the values of ``obs`` (float32 arrays; int64 actions when discrete)."""
        x = np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)
        outputs = []
        for layers, activation in self.towers:
            h = x
            for weight, bias in layers[:-1]:
                h = activation(h @ weight + bias)
            weight, bias = layers[-1]
            outputs.append(h @ weight + bias)
        actor_out, value = outputs[0], outputs[1][:, 0]
        if self.continuous:
            noise = self.rng.standard_normal(actor_out.shape, dtype=np.float32)
            action = actor_out + np.exp(self.log_std) * noise
            log_prob = (-0.5 * noise * noise - self.log_std - _HALF_LOG_2PI).sum(-1, dtype=np.float32)
            return action, log_prob, value
        shifted = actor_out - actor_out.max(-1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        cumulative = np.exp(log_softmax).cumsum(-1)
        # Inverse-CDF sampling; the clip guards against a last cumulative value just under 1.
        action = np.minimum((cumulative < self.rng.random((len(x), 1), dtype=np.float32)).sum(-1), actor_out.shape[-1] - 1)
        return action, np.take_along_axis(log_softmax, action[:, None], -1)[:, 0], value


def supports_q_network(q_network: torch.nn.Module) -> bool:
    """Return whether :class:`MLPDQNGradients` can differentiate this Q-network's loss by hand."""
    return not q_network.dueling and type(q_network.encoder).__name__ == "Flatten" and q_network.head.activation_name in _BACKWARDS


class MLPDQNGradients:
    """DQN's TD loss (Huber or squared error) for an MLP :class:`QNetwork`, and its gradient, without autograd.

    Like :class:`MLPPPOGradients`, it overwrites the parameters' ``.grad``.
    """

    def __init__(self, q_network: torch.nn.Module, loss: str):
        if not supports_q_network(q_network):
            raise ValueError("MLPDQNGradients needs a QNetwork with the flatten encoder, no dueling head and a tanh, relu or elu MLP")
        self.tower = MLPTower(q_network.head)
        self.huber = loss == "huber"
        for parameter in q_network.parameters():
            if parameter.requires_grad and parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)

    @torch.inference_mode()
    def grad(self, obs: torch.Tensor, actions: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Set the gradient of the TD loss on one minibatch; return the TD errors and the Q-values of the taken actions.

        The loss itself is left to :meth:`td_loss`, so a loop over many minibatches can compute it
        once for all of them.
        """
        x = obs if obs.dtype == torch.float32 and obs.dim() == 2 else obs.reshape(obs.shape[0], -1).float()
        q, saved = self.tower.forward(x)
        index = actions.long().unsqueeze(1)
        q_taken = q.gather(1, index).squeeze(1)
        error = q_taken - target
        count = x.shape[0]
        if self.huber:  # smooth L1 with beta 1 has the gradient clamp(error, -1, 1)
            grad_taken = error.clamp(-1.0, 1.0).mul_(1.0 / count)
        else:
            grad_taken = error.mul(2.0 / count)
        grad_q = torch.zeros_like(q).scatter_(1, index, grad_taken.unsqueeze(1))
        self.tower.backward(x, saved, grad_q)
        return error, q_taken

    def td_loss(self, errors: torch.Tensor) -> torch.Tensor:
        """Return the mean TD loss of ``errors``: smooth L1 (0.5 e^2 inside [-1, 1], |e| - 0.5 outside) or e^2."""
        if self.huber:
            absolute = errors.abs()
            return torch.where(absolute < 1.0, 0.5 * errors * errors, absolute - 0.5).mean()
        return (errors * errors).mean()

    def loss_and_grad(self, obs: torch.Tensor, actions: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Set the gradient of the TD loss on one minibatch; return the loss and the mean Q of the taken actions."""
        error, q_taken = self.grad(obs, actions, target)
        return self.td_loss(error), q_taken.mean()


class NumpyGreedy:
    """Arg-max of an MLP Q-network in NumPy, for acting on CPU; build one per use, like :class:`NumpySampler`."""

    def __init__(self, q_network: torch.nn.Module):
        self.layers = [(layer.weight.detach().numpy().T, layer.bias.detach().numpy()) for layer in q_network.head.linears]
        self.activation = _NUMPY_ACTIVATIONS[q_network.head.activation_name]

    @classmethod
    def build(cls, q_network: torch.nn.Module) -> "NumpyGreedy | None":
        """Return the greedy policy in NumPy, or None where the network is not a CPU float32 MLP on flat observations."""
        if not supports_q_network(q_network) or any(p.device.type != "cpu" or p.dtype != torch.float32 for p in q_network.parameters()):
            return None
        return cls(q_network)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        h = np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)
        for weight, bias in self.layers[:-1]:
            h = self.activation(h @ weight + bias)
        weight, bias = self.layers[-1]
        return (h @ weight + bias).argmax(-1)
