package dev.spindle.client.examples;

import dev.spindle.client.GenerationStream;
import dev.spindle.client.SpindleClient;
import dev.spindle.client.SpindleException;
import dev.spindle.v1.FinalOutput;
import dev.spindle.v1.GenerateResponse;
import dev.spindle.v1.OutputDelta;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;

/**
 * Streams a completion from a Spindle server to stdout.
 *
 * <pre>mvn -q compile exec:java -Dexec.args="--target 127.0.0.1:50051 --max-tokens 32 Once upon a time"</pre>
 */
public final class Generate {
  private Generate() {}

  public static void main(String[] args) throws Exception {
    String target = "127.0.0.1:50051";
    int maxTokens = 32;
    StringBuilder prompt = new StringBuilder();
    for (int i = 0; i < args.length; i++) {
      if (args[i].equals("--target") && i + 1 < args.length) {
        target = args[++i];
      } else if (args[i].equals("--max-tokens") && i + 1 < args.length) {
        maxTokens = Integer.parseInt(args[++i]);
      } else {
        prompt.append(prompt.length() == 0 ? "" : " ").append(args[i]);
      }
    }
    if (prompt.length() == 0) {
      System.err.println("usage: Generate [--target HOST:PORT] [--max-tokens N] PROMPT");
      System.exit(2);
    }
    PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    try (SpindleClient client = new SpindleClient(target);
        GenerationStream stream = client.stream(SpindleClient.text(prompt.toString()),
            SpindleClient.greedy(maxTokens), "")) {
      for (GenerateResponse msg : stream) {
        for (OutputDelta d : msg.getDeltasList()) {
          out.print(d.getText());
        }
        if (msg.hasFinal()) {
          out.flush();
          FinalOutput f = msg.getFinal();
          System.err.printf("%n[%s: %d prompt + %d completion tokens, first token %.1f ms]%n",
              f.getBranches(0).getFinishReason(), f.getUsage().getPromptTokens(),
              f.getUsage().getCompletionTokens(), f.getUsage().getTimeToFirstTokenMs());
        }
      }
      out.flush();
    } catch (SpindleException e) {
      System.err.println(e.getMessage());
      System.exit(1);
    }
  }
}
