"""What is deployed to Azure and checked before it is: the Workflow Definition Language's
expressions and functions (expressions, functions), logicapp/workflow.json loaded and its
parameters prepared (workflow), its references checked (workflow_check), and the deployment
itself (deploy: `scripts/deploy.py up`, through the Azure clients it is given).

May import: the ground only.
"""
