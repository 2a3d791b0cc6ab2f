# Evaluations of one finetuned model each (black-box: one crafting job per source model, one
# evaluation job per target model). Outputs sit next to each other in eval_dir(...).


rule evaluate_pgd:
    input:
        unpack(model_inputs),
        data=target_file,
    output:
        metrics=f"{EVAL_DIR}/pgd.json",
    log:
        f"{EVAL_LOG}/pgd.log",
    resources:
        **eval_resources(),
    params:
        settings=evaluate_json,
        code=code_hash("evaluate"),
    shell:
        f"{JOB_ENV}"
        " {ASCL} evaluate --settings {params.settings:q} --data {input.data} "
        "--out {output.metrics} "
        f"{EVAL_ARGS}"
        " --tag rule=evaluate_pgd > {log} 2>&1"
        f"{REPORT_SIGNAL}"


rule evaluate_autoattack:
    input:
        unpack(model_inputs),
        data=target_file,
    output:
        metrics=f"{EVAL_DIR}/autoattack.json",
    log:
        f"{EVAL_LOG}/autoattack.log",
    resources:
        **eval_resources(),
    params:
        settings=evaluation_json("autoattack"),
        code=code_hash("evaluations.autoattack"),
    shell:
        f"{JOB_ENV}"
        " {ASCL} autoattack --settings {params.settings:q} --data {input.data} "
        "--out {output.metrics} "
        f"{EVAL_ARGS}"
        " --tag rule=evaluate_autoattack > {log} 2>&1"
        f"{REPORT_SIGNAL}"


rule blackbox_craft:
    input:
        unpack(model_inputs),
        data=target_file,
    output:
        examples=f"{EVAL_DIR}/blackbox_examples.npz",
    log:
        f"{EVAL_LOG}/blackbox_craft.log",
    resources:
        **eval_resources(),
    params:
        settings=evaluation_json("blackbox"),
        code=code_hash("evaluations.blackbox"),
    shell:
        f"{JOB_ENV}"
        " {ASCL} blackbox-craft --settings {params.settings:q} --data {input.data} "
        "--name {wildcards.method}/{wildcards.strategy} --out {output.examples} "
        f"{EVAL_ARGS}"
        " --tag rule=blackbox_craft > {log} 2>&1"
        f"{REPORT_SIGNAL}"


rule blackbox_eval:
    input:
        unpack(model_inputs),
        sources=blackbox_sources,
    output:
        metrics=f"{EVAL_DIR}/blackbox.json",
    log:
        f"{EVAL_LOG}/blackbox_eval.log",
    resources:
        **eval_resources(),
    params:
        settings=evaluation_json("blackbox"),
        code=code_hash("evaluations.blackbox"),
        sources=blackbox_source_args,
    shell:
        f"{JOB_ENV}"
        " {ASCL} blackbox-eval --settings {params.settings:q} "
        "--name {wildcards.method}/{wildcards.strategy} {params.sources} "
        "--out {output.metrics} "
        f"{EVAL_ARGS}"
        " --tag rule=blackbox_eval > {log} 2>&1"
        f"{REPORT_SIGNAL}"


rule evaluate_corruptions:
    input:
        unpack(model_inputs),
        data=corruptions_dir(),
    output:
        metrics=f"{EVAL_DIR}/corruptions.json",
        table=f"{EVAL_DIR}/corruptions.csv",
    log:
        f"{EVAL_LOG}/corruptions.log",
    resources:
        **eval_resources(),
    params:
        settings=evaluation_json("corruptions"),
        code=code_hash("evaluations.corruptions"),
    shell:
        f"{JOB_ENV}"
        " {ASCL} corruptions --settings {params.settings:q} --data {input.data} "
        "--out {output.metrics} --out-csv {output.table} "
        f"{EVAL_ARGS}"
        " --tag rule=evaluate_corruptions > {log} 2>&1"
        f"{REPORT_SIGNAL}"


rule evaluate_inversion:
    input:
        unpack(model_inputs),
        data=target_file,
    output:
        table=f"{EVAL_DIR}/inversion.csv",
        images=f"{EVAL_DIR}/inversion.npz",
    log:
        f"{EVAL_LOG}/inversion.log",
    resources:
        **eval_resources(),
    params:
        settings=evaluation_json("inversion"),
        code=code_hash("evaluations.inversion"),
    shell:
        f"{JOB_ENV}"
        " {ASCL} inversion --settings {params.settings:q} --data {input.data} "
        "--out {output.table} --out-npz {output.images} "
        f"{EVAL_ARGS}"
        " --tag rule=evaluate_inversion > {log} 2>&1"
        f"{REPORT_SIGNAL}"


# t-SNE, input and weight loss landscapes and attack strength: one CSV each.
rule evaluate_curve:
    input:
        unpack(model_inputs),
        data=target_file,
    output:
        table=f"{EVAL_DIR}/{{curve}}.csv",
    log:
        f"{EVAL_LOG}/{{curve}}.log",
    resources:
        **eval_resources(),
    params:
        settings=lambda wc: evaluation_json(wc.curve)(wc),
        code=lambda wc: code_hash(f"evaluations.{wc.curve}"),
        command=lambda wc: wc.curve.replace("_", "-"),
    shell:
        f"{JOB_ENV}"
        " {ASCL} {params.command} --settings {params.settings:q} --data {input.data} "
        "--out {output.table} "
        f"{EVAL_ARGS}"
        " --tag rule=evaluate_curve > {log} 2>&1"
        f"{REPORT_SIGNAL}"


rule evaluate_all:
    input:
        evaluation_targets(),
