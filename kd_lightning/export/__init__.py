"""Deploying a trained student: rebuild it from a checkpoint, export it with its normalisation built in."""

from kd_lightning.export.checkpoint import load_module, load_student, read_checkpoint, rebuild_facts, student_state_dict

__all__ = ["load_module", "load_student", "read_checkpoint", "rebuild_facts", "student_state_dict"]
