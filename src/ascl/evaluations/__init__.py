"""The paper's evaluations beyond PGD accuracy, one module and one job function each.

=================  =======================================  ====================================
settings key       job function (module)                    paper
=================  =======================================  ====================================
autoattack         run_autoattack (autoattack)              RA-AA, Tables 1 and 5
blackbox           run_blackbox_craft / run_blackbox_eval   Table 2 (transfer attacks)
corruptions        run_corruptions (corruptions)            Fig. 1 and 7 (CIFAR-10-C)
tsne               run_tsne (tsne)                          Fig. 3
inversion          run_inversion (inversion)                Fig. 2 (eq. 11)
landscape_input    run_landscape_input (landscape_input)    Fig. 4
landscape_weight   run_landscape_weight (landscape_weight)  Fig. 5
strength           run_strength (strength)                  Fig. 6
=================  =======================================  ====================================

`ascl.registry.REGISTRY` lists them (metadata only, so that the params layer can read it
without importing a job); adding one is a module with its job function (built on
`common.evaluation_job`), one `REGISTRY` entry, its `evaluate.<key>` params (and schema) and its
workflow rule. Each job takes the settings resolved by
`ascl.config.evaluation_settings(params, key)`, the
finetuned classifier checkpoint(s), the data, its output path(s), the seed, and logs its metrics
to an MLflow child run of the model's run. Modules are imported lazily (torch, scikit-learn and
AutoAttack are only loaded by the job that needs them).
"""
