"""The session simulator: Gymnasium API compliance, click model values and episode end."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from apps.recommendation.simulator import ENV_ID, RecommendationSessionEnv, SimulatorSettings, scores_from_order


def test_check_env_passes(world):
    env = RecommendationSessionEnv(world, SimulatorSettings(slate_size=5, history_length=4, max_session_steps=6))
    check_env(env, skip_render_check=True)


def test_registered_id_builds_with_world(world):
    env = gym.make(ENV_ID, world=world, settings={"slate_size": 3})
    obs, info = env.reset(seed=1)
    assert obs["candidates"].shape == (20, 8)
    assert env.action_space.shape == (20,)
    env.close()


def test_slate_is_top_k_of_the_action(world):
    env = RecommendationSessionEnv(world, SimulatorSettings(slate_size=3))
    env.reset(seed=0, options={"user": 2})
    order = np.array([5, 1, 7] + [i for i in range(20) if i not in (5, 1, 7)])
    _, _, _, _, info = env.step(scores_from_order(order, 20))
    assert info["slate"].tolist() == world.candidates[2][[5, 1, 7]].tolist()


def test_click_probability_hand_computed(world):
    settings = SimulatorSettings(slate_size=2, position_bias=1.0, repeat_decay=0.5, preference_scale=2.0, click_offset=-1.0, similarity_penalty=0.0)
    env = RecommendationSessionEnv(world, settings)
    env.reset(seed=0, options={"user": 0})
    logits = world.preference.logits(0, world.candidates[0][[0, 1]])
    sigmoid = 1 / (1 + np.exp(-(2.0 * logits - 1.0)))
    # Slot 0 is examined with probability 1/log2(2) = 1, slot 1 with 1/log2(3).
    expected = sigmoid * np.array([1.0, 1.0 / np.log2(3.0)])
    assert env.click_probabilities(np.array([0, 1])) == pytest.approx(expected)
    # After one showing, each item's click probability halves (repeat_decay 0.5).
    env._shown[[0, 1]] = 1.0
    assert env.click_probabilities(np.array([0, 1])) == pytest.approx(expected * 0.5)


def test_unsatisfied_user_always_leaves(world):
    settings = SimulatorSettings(click_offset=-50.0, leave_if_unsatisfied=1.0)
    env = RecommendationSessionEnv(world, settings)
    env.reset(seed=3)
    _, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert reward == 0.0
    assert terminated and not truncated
    assert info["session_clicks"] == 0


def test_session_truncates_at_max_steps(world):
    settings = SimulatorSettings(max_session_steps=3, leave_probability=0.0, leave_if_unsatisfied=0.0)
    env = RecommendationSessionEnv(world, settings)
    env.reset(seed=4)
    ends = [env.step(env.action_space.sample())[2:4] for _ in range(3)]
    assert ends == [(False, False), (False, False), (False, True)]


def test_diversity_weight_adds_slate_distance(world):
    common = dict(click_offset=-50.0, leave_if_unsatisfied=0.0)
    plain = RecommendationSessionEnv(world, SimulatorSettings(**common))
    diverse = RecommendationSessionEnv(world, SimulatorSettings(diversity_weight=2.0, **common))
    for env in (plain, diverse):
        env.reset(seed=5, options={"user": 1})
    action = scores_from_order(np.arange(20), 20)
    from apps.recommendation.metrics import intra_list_distance

    expected = 2.0 * intra_list_distance(world.embeddings[world.candidates[1][:10]])
    assert plain.step(action)[1] == 0.0
    assert diverse.step(action)[1] == pytest.approx(expected)


def test_same_seed_same_session(world):
    def run():
        env = RecommendationSessionEnv(world)
        env.reset(seed=11)
        env.action_space.seed(0)
        return [env.step(scores_from_order(np.arange(20), 20))[1] for _ in range(3)]

    assert run() == run()


def test_preference_auc_above_chance(world):
    users = np.arange(12)
    # The training items themselves must score above random unseen items for a fitted model.
    positives = np.array([h[-1] for h in world.histories])
    histories = [h[:-1] for h in world.histories]
    assert world.preference.auc(users, positives, histories, 60, seed=0, negatives=20) > 0.6


def test_clicked_items_are_not_shown_again(world):
    # Every examined item is clicked (logit +50, no position bias), so slate 1 is all clicked.
    settings = SimulatorSettings(slate_size=3, click_offset=50.0, position_bias=0.0, leave_probability=0.0)
    env = RecommendationSessionEnv(world, settings)
    env.reset(seed=0, options={"user": 4})
    action = scores_from_order(np.arange(20), 20)
    obs, _, _, _, first = env.step(action)
    assert first["clicks"].tolist() == [1, 1, 1]
    assert obs["available"][:3].tolist() == [0.0, 0.0, 0.0]
    _, _, _, _, second = env.step(action)
    # The same action now shows candidates 3, 4 and 5: clicked items are filtered for every policy.
    assert second["slate"].tolist() == world.candidates[4][[3, 4, 5]].tolist()


def test_session_ends_when_candidates_run_out(world):
    settings = SimulatorSettings(slate_size=10, click_offset=50.0, position_bias=0.0, leave_probability=0.0)
    env = RecommendationSessionEnv(world, settings)
    env.reset(seed=0, options={"user": 0})
    action = scores_from_order(np.arange(20), 20)
    # 20 candidates: after the first slate 10 remain (enough for one more slate), after the second none.
    assert env.step(action)[2] is False
    assert env.step(action)[2] is True


def test_leave_chance_grows_with_misses(world):
    # No clicks; the leave chance is 0 after the first miss and 0 + 1 * 1.0 after the second.
    settings = SimulatorSettings(click_offset=-50.0, leave_if_unsatisfied=0.0, unsatisfied_leave_step=1.0)
    env = RecommendationSessionEnv(world, settings)
    env.reset(seed=2)
    action = scores_from_order(np.arange(20), 20)
    assert env.step(action)[2] is False
    assert env.step(action)[2] is True


def test_repeat_decay_compounds_per_showing(world):
    settings = SimulatorSettings(slate_size=2, repeat_decay=0.8, click_offset=0.0, similarity_penalty=0.0)
    env = RecommendationSessionEnv(world, settings)
    env.reset(seed=0, options={"user": 3})
    fresh = env.click_probabilities(np.array([0, 1]))
    env._shown[[0, 1]] = [3.0, 0.0]
    # Three earlier showings: 0.8**3 = 0.512 of the first-showing probability; slot 1 unchanged.
    assert env.click_probabilities(np.array([0, 1])) == pytest.approx(fresh * np.array([0.512, 1.0]))
