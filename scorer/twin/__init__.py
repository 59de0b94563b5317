"""The local twin (`scorer local`): Azure's moving parts run on this machine. The workflow
engine runs logicapp/workflow.json itself (engine), the stand-in answers the Azure REST
calls the workflow makes (standin) and starts container groups as processes or images
(backends), and local wires them to Azurite (local).

May import: the ground and scorer.azure (the workflow's language and parameters). Never
scorer.batch or scorer.online: the twin runs the job as Azure would, as a process.
"""
