"""Fit the bundled cascade policy: answer-length evidence for the bundled mmlu_pro predictor.

Reads the bundled dataset's dev split (questions the predictor was not trained on) and writes
routoo_shared/datasets/predictors/mmlu_pro/cascade.json. Run it again whenever the bundled
predictor is retrained:  PYTHONPATH=. python3 scripts/fit_cascade.py
"""

from routoo_shared.evaluation.cascades import fit_policy, policy_summary
from routoo_shared.routing.cascade import BUNDLED_POLICY
from routoo_shared.data.formats import bundled, load_questions
from routoo_shared.routing.router import Router


def main() -> None:
    router = Router.from_directory()
    models = router.predictor.models
    dev = load_questions(bundled("mmlu_pro"), split="dev")
    policy = fit_policy(dev, router.predictor.predict([q.prompt for q in dev], models), models)
    policy.save(BUNDLED_POLICY)
    print(policy_summary(policy))
    print(f"saved {BUNDLED_POLICY}")


if __name__ == "__main__":
    main()
