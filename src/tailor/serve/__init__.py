"""Using the winner: an OpenAI-compatible server of one base with many arms (`tailor serve`),
and batch prediction over files (`tailor predict`, in tailor/predict.py), both running each arm
through its saved recipe, as the ladder measured it."""
