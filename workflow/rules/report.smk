localrules:
    table,


rule table:
    input:
        table_inputs,
    output:
        md="results/paper/{table}.md",
        csv="results/paper/{table}.csv",
        html=report(
            "results/paper/{table}.html",
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
    log:
        "logs/paper/{table}.log",
    params:
        spec=lambda wc: ascl_config.settings_json(table_spec(wc.table)),
        code=code_hash("table"),
    shell:
        "{ASCL} table --spec {params.spec:q} --results results --out-md {output.md} "
        "--out-csv {output.csv} --out-html {output.html} > {log} 2>&1"
        f"{REPORT_SIGNAL}"


for _table in sorted(config["paper"]):

    rule:
        name:
            _table
        input:
            f"results/paper/{_table}.md",


localrules:
    claims,


rule claims:
    input:
        tables=expand("results/paper/{table}.csv", table=sorted(config["paper"])),
        figures=[path for _, path in claim_figure_files()],
    output:
        md="results/paper/claims.md",
        csv="results/paper/claims.csv",
        json="results/paper/claims.json",
        html=report(
            "results/paper/claims.html",
            caption="../report/claims.rst",
            category="Claims",
        ),
    log:
        "logs/paper/claims.log",
    params:
        claims=ascl_config.settings_json(config.get("claims", {})),
        figures=claim_figure_args,
        code=code_hash("claims"),
    shell:
        "{ASCL} claims --claims {params.claims:q} --tables {input.tables} {params.figures} "
        "--out-md {output.md} --out-csv {output.csv} --out-json {output.json} "
        "--out-html {output.html} > {log} 2>&1"
        f"{REPORT_SIGNAL}"


localrules:
    paper_summary,


rule paper_summary:
    input:
        tables=expand("results/paper/{table}.csv", table=sorted(config["paper"])),
        claims="results/paper/claims.json" if "claims" in config else [],
    output:
        "results/metrics.json",
    log:
        "logs/paper/summary.log",
    params:
        claims=lambda wc, input: f"--claims {input.claims}" if input.claims else "",
    shell:
        "{ASCL} summary {input.tables} {params.claims} --out {output} > {log} 2>&1"
        f"{REPORT_SIGNAL}"


localrules:
    figure,


rule figure:
    input:
        figure_inputs,
    output:
        report(
            "results/paper/figures/{fig}.png",
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{fig}"},
        ),
    log:
        "logs/paper/{fig}.log",
    params:
        inputs=figure_args,
        title=lambda wc: config["figures"][wc.fig]["title"],
        caption=lambda wc: figure_caption(wc.fig),
        code=code_hash("figure"),
    shell:
        "{ASCL} figure {wildcards.fig} {params.inputs} --title {params.title:q} "
        "--caption {params.caption:q} --out {output} > {log} 2>&1"
        f"{REPORT_SIGNAL}"


for _fig in sorted(config.get("figures", {})):

    rule:
        name:
            _fig
        input:
            f"results/paper/figures/{_fig}.png",
