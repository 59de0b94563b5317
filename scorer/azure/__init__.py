"""Azure deployment helpers for scorer (used by scripts/deploy.py and the tests).

    expressions     parse (and, for tests, evaluate) Logic Apps workflow expressions
    workflow_check  check a workflow definition's references: parameters, actions, variables, runAfter
    workflow        load logicapp/workflow.json and prepare it for deployment

Nothing here talks to Azure; scripts/deploy.py does, through clients it is given.
"""
