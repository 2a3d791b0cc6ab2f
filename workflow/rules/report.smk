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


for _table in sorted(config["paper"]):

    rule:
        name:
            _table
        input:
            f"results/paper/{_table}.md",


localrules:
    paper_summary,


rule paper_summary:
    input:
        expand("results/paper/{table}.csv", table=sorted(config["paper"])),
    output:
        "results/metrics.json",
    log:
        "logs/paper/summary.log",
    shell:
        "{ASCL} summary {input} --out {output} > {log} 2>&1"


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


for _fig in sorted(config.get("figures", {})):

    rule:
        name:
            _fig
        input:
            f"results/paper/figures/{_fig}.png",
