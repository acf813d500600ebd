"""Distillation: the teacher's batch labels (teacher.py), the student (student.py), the losses on
the one loop (losses.py) and the imitation check (imitation.py); the arm is methods/distill.py."""
