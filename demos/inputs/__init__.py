"""Input helpers shared by the tasks: text encoding and token attributions, audio decoding, image loading."""
