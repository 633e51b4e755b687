"""Operation folders: ``dg scaffold defs amd_pipeline.WolkvoxOperation <id> ...`` writes ``<id>/defs.yaml`` here.

With none, the environment variables describe the one operation (docs/operating.md, "Several operations").
"""
