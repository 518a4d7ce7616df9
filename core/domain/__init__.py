"""The pure domain: values and rules. Imports no libvirt, tortoise or Slack."""
