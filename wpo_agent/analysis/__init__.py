"""Analysis tools: they read what runs wrote, and run suites of runs.

The training path (runners, learner, actors) never imports this package. Each
module's CLI is `python -m wpo_agent.analysis.<module>`.

  results       the one reader of runs' and suites' results; return at step S
  plot          curves and a summary table of single runs
  report        suites' seed-aggregated tables: means, IQM, baselines
  published     published curves and returns (docs/published_curves.csv,
                docs/baselines.csv) derived from ../shared/data, and their reader
  report_plots  the report's figures: curves, profiles, mixture components
  stats         seeded wrappers of rliable's interval estimates
  suites        named task suites and the suite runner (launch/run_suite.py)
  video         an MP4 of a run's policy, from its newest checkpoint
  toy           the paper's toy problems (docs/algorithm.md Sec. 9)
"""
