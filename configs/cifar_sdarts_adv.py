"""SDARTS-ADV (Chen & Hsieh, ICML 2020) on DARTS' CNN space, CIFAR-10.

    python main.py --config configs/cifar_sdarts_adv.py --workdir runs/cifar_sdarts_adv

configs/cifar_sdarts_rs.py with the weight step at adversarial mixing weights instead of
random ones: a 7-step L-inf attack of step 2 eps / 7 from a random start, ascending the weight
batch's training loss, BN on the running statistics, the clean weights kept when the attack
does not raise the loss (`darts_jax.perturbations.adversarial`; SmoothDARTS,
attacker/perturb.py `Linf_PGD_alpha`, `--perturb_alpha pgd_linf`). The rest as there.
"""

from configs import cifar_sdarts_rs


def get_config():
  config = cifar_sdarts_rs.get_config()
  config.weight_perturbation = "adversarial"
  return config
