"""Pictures: the one-page vetting sheet (``sheet``) and attribution maps (``explain``, captum
Integrated Gradients). Arrays in, matplotlib Figures out."""
