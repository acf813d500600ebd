"""Preference alignment: preference data (pairs and rankings), the DPO loss on the one training
loop, a Bradley–Terry reward model, and PPO with a KL penalty (its own compact loop over the
same prompt builder, engine and checkpoints).

Sources: InstructGPT (Ouyang et al. 2022) for the reward model from rankings and PPO against a
KL-penalised reward; DPO (Rafailov et al. 2023); IPO (Azar et al. 2023); PPO (Schulman et al. 2017).
"""
