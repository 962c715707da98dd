"""Workflow definitions, versions, template rendering, the planner."""
