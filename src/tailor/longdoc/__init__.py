"""Long documents: plan-and-execute (PEARL, Sun et al. 2023) and entity extraction as lossy
compression of a context that does not fit.

- plan.py: the plan grammar (`VAR = ACTION(args)`), its parser and validator, whose one-line
  errors go back to the model;
- actions.py: the starting actions, action mining from training questions, merging;
- documents.py: one document of a knowledge base: its text, and search inside it only;
- planning.py: plan generation with error feedback and counted retries;
- execute.py: running plans step by step, one engine call per action, calls and tokens counted;
- extract.py: the extraction schema, records validated against it, compression accounting.

The arms that use them live in methods/longdoc.py. Importing this package loads no model.
"""
